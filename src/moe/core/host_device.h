// MOE_HD marks functions usable from both host and CUDA device code.
#pragma once

#if defined(__CUDACC__)
#define MOE_HD __host__ __device__ __forceinline__
#else
#define MOE_HD inline
#endif
