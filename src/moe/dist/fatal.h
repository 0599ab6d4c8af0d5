// What a rank does when an exception escapes its main. With one process, print and exit 1 as
// any program does. With several ranks the others may be waiting in a collective for this one
// and would hang, so the rank reports the error with its rank and host and ends the whole job
// through the world's abort (MPI: MPI_Abort, which makes mpirun end every rank).
//
//   } catch (const std::exception& e) {
//     moe::dist::report_and_abort(e);  // returns only without a multi-rank world
//     std::fprintf(stderr, "moe: error: %s\n", e.what());
//     return 1;
//   }
#pragma once

#include <exception>
#include <memory>
#include <string>

namespace moe::dist {

class ProcessGroup;

// Registers the world group of this process (init_mpi_world does; so does any other backend's
// world setup), held weakly: report_and_abort uses it while it is alive.
void register_world(const std::shared_ptr<ProcessGroup>& world);

// Prints "[rank R host] <message>" to stderr (R the registered world's rank, "?" without one)
// and flushes. The same line twice in a row is printed once, so that report_and_abort followed
// by a backend's abort, which prints its reason too, reports once.
void print_rank_line(const std::string& message);

// If a registered world of more than one rank is alive: prints "[rank R host] error: <what>"
// and calls the world's abort("error: <what>"), which for MPI does not return. Returns true if
// it reported (the caller then exits non-zero without printing again), false when there is no
// such world (the caller prints and exits 1).
bool report_and_abort(const std::exception& error);

}  // namespace moe::dist
