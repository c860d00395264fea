# cmake -DOUT_DIR=<dir> -P test_kernel_table_generator.cmake: generates every instance of
# cmake/kernel_table.json for archs 80 and 90a and checks what the table promises.
cmake_minimum_required(VERSION 3.24)
include(${CMAKE_CURRENT_LIST_DIR}/../../cmake/FastnaGenerator.cmake)
file(REMOVE_RECURSE "${OUT_DIR}")
fastna_generate_instances(OUT_DIR "${OUT_DIR}"
  KERNELS naive_fwd naive_bwd fused_fwd fused_bwd gemm_na hopper_fwd hopper_bwd small_fwd
          fused_fwd_grouped fused_bwd_grouped small_fwd_grouped hopper_fwd_grouped hopper_bwd_grouped
  RANKS 1 2 3 DTYPES float32 float16 bfloat16 ARCHS 80 90a HEAD_DIMS 32 64 128 256
  SOURCES_VAR_PREFIX src)
file(READ "${OUT_DIR}/fastna_instances.inc" inc)

function(expect what)
  string(FIND "${inc}" "${what}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "missing from fastna_instances.inc: ${what}")
  endif()
endfunction()
function(expect_not what)
  string(FIND "${inc}" "${what}" at)
  if(NOT at EQUAL -1)
    message(FATAL_ERROR "unexpected in fastna_instances.inc: ${what}")
  endif()
endfunction()

expect("(naive_fwd_r3_float32_sm80, \"naive_fwd\", \"naive\", \"default\", 3, \"float32\", 0, \"80\", (), ()")
expect("(fused_fwd_r2_bfloat16_d128_q16x8_kv4x8_sm80, \"fused_fwd\", \"sm80\", \"q16x8_kv4x8\", 2, \"bfloat16\", 128, \"80\", (16,8), (4,8)")
expect("(fused_fwd_r3_float32_d256_default_sm80, \"fused_fwd\", \"sm80\", \"default\", 3, \"float32\", 256, \"80\", (4,4,4), (2,4,4)")
expect("(fused_fwd_r3_float32_d64_default_sm80, \"fused_fwd\", \"sm80\", \"default\", 3, \"float32\", 64, \"80\", (4,4,4), (4,4,4)")
expect("(small_fwd_r2_float16_d64_small_sm90a, \"fused_fwd\", \"small\", \"small\", 2, \"float16\", 64, \"90a\", (8,8), (14,8)")
expect("(hopper_fwd_r1_bfloat16_d32_hopper_sm90a, \"fused_fwd\", \"sm90\", \"hopper\", 1, \"bfloat16\", 32, \"90a\", (128), (64)")
# Grouped kernels take the tiles of the dense kernel whose CTA body they run (tiles_of).
expect("(hopper_fwd_grouped_r1_bfloat16_d32_hopper_sm90a, \"fused_fwd_grouped\", \"sm90\", \"hopper\", 1, \"bfloat16\", 32, \"90a\", (128), (64)")
expect("(small_fwd_grouped_r2_float16_d64_small_sm80, \"fused_fwd_grouped\", \"small\", \"small\", 2, \"float16\", 64, \"80\", (8,8), (14,8)")
expect("(fused_bwd_grouped_r3_bfloat16_d128_default_sm90a, \"fused_bwd_grouped\", \"sm80\", \"default\", 3, \"bfloat16\", 128, \"90a\", (4,4,4), (4,4,4)")
expect_not("fused_fwd_grouped_r2_bfloat16_d128_q16x8")
expect("(hopper_bwd_grouped_r2_float16_d64_hopper_sm90a, \"fused_bwd_grouped\", \"sm90\", \"hopper\", 2, \"float16\", 64, \"90a\", (16,8), (16,8)")
expect("(hopper_bwd_r3_float16_d128_hopper_sm90a, \"fused_bwd\", \"sm90\", \"hopper\", 3, \"float16\", 128, \"90a\", (2,8,8), (2,8,8)")
expect("(gemm_na_r1_float32_d32_default_sm80, \"gemm_na\", \"gemm\", \"default\"")
expect_not("hopper_fwd_r1_bfloat16_d32_hopper_sm80")   # sm_90a only
expect_not("small_fwd_r3")                             # no 3D small-window tile
expect_not("fused_bwd_r1_float32")                     # no float32 fused backward
expect_not("hopper_bwd_r1_bfloat16_d32")               # head dims 64 and 128 only
expect_not("fused_fwd_r2_float32_d128_q16x8_kv4x8")    # 16-bit only
list(LENGTH src_80 n80)
list(LENGTH src_90a n90a)
message(STATUS "kernel table: ${n80} instances for sm80, ${n90a} for sm90a")
