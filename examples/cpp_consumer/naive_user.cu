// Compile-only proof that <fastna/naive/...> works from a consumer's .cu file; no GPU needed.
#include <fastna/naive/naive.cuh>

fastna::naive::Status consumer_forward(const fastna::naive::Forward<2, __half>::Arguments& args,
                                       cudaStream_t stream) {
  fastna::naive::Forward<2, __half> op;
  return op.run(args, stream);
}

fastna::naive::Status consumer_backward(const fastna::naive::Backward<3, __nv_bfloat16>::Arguments& args,
                                        cudaStream_t stream) {
  fastna::naive::Backward<3, __nv_bfloat16> op;
  return op.run(args, stream);
}
