#!/usr/bin/env bash
# A failing rank ends the whole MPI job: runs `moe_mpi_tests --fault KIND` on NP ranks under
# mpirun and checks that the job exits non-zero within 30 s and that its output holds every
# expected text (the failing rank named as "[rank R host] error: ...").
#   mpi_fault_test.sh MPIEXEC MOE_MPI_TESTS KIND NP TEXT...
set -u
if [ $# -lt 5 ]; then
  echo "usage: $0 MPIEXEC MOE_MPI_TESTS KIND NP TEXT..." >&2
  exit 2
fi
mpiexec=$1 exe=$2 kind=$3 np=$4
shift 4
fail() {
  echo "mpi_fault_test $kind: $*" >&2
  exit 1
}
start=$SECONDS
# The timeout is a backstop: a job that hangs fails here instead of at CTest's limit.
output=$(timeout 60 "$mpiexec" --allow-run-as-root --oversubscribe -np "$np" "$exe" --fault "$kind" 2>&1)
status=$?
elapsed=$((SECONDS - start))
echo "$output"
echo "mpi_fault_test $kind: exit status $status after ${elapsed} s"
[ "$status" -ne 124 ] || fail "the job was still running after 60 s"
[ "$status" -ne 0 ] || fail "the job exited 0"
[ "$elapsed" -lt 30 ] || fail "the job took ${elapsed} s to end (limit 30 s)"
for text in "$@"; do
  grep -qF -- "$text" <<<"$output" || fail "the output lacks \"$text\""
done
echo "mpi_fault_test $kind: ok"
