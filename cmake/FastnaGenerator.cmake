# The instantiation generator: one translation unit per (kernel, rank, dtype, arch), and for
# fused kernels also per head dim and tile variant.
#
# One TU per instance keeps every compile small and parallel (a single TU holding everything
# serializes the build on one core), and lets FASTNA_KERNELS/RANKS/DTYPES/ARCHS/HEAD_DIMS cut a
# build down to the one instance a developer is iterating on.
#
# fastna_generate_instances(
#   OUT_DIR <dir>                     generated sources and fastna_instances.inc go here
#   KERNELS <k>...  RANKS <r>...  DTYPES <t>...  ARCHS <a>...
#   [HEAD_DIMS <d>...]                head dims of the fused kernels (unused by naive ones)
#   SOURCES_VAR_PREFIX <prefix>)      sets <prefix>_<arch> = list of sources for that arch
#
# Writes <dir>/fastna_instances.inc, one line per instance:
#   FASTNA_INSTANCE(kernel, rank, dtype, head_dim, tile, arch, symbol)
# head_dim is 0 and tile is `default` for kernels that take any head dim (naive); symbol is the
# function the TU defines (void symbol(const LaunchParams&)).  Also sets <prefix>_INSTANCES to
# the same tuples as "kernel|rank|dtype|head_dim|tile|arch" strings.
#
# Fused kernels (fused_fwd, fused_bwd) are instantiated only for archs >= 80 (sm80-class mma.sync
# kernels; compiled as-is for 90a etc.), fused_bwd for float16/bfloat16, fused_fwd also for
# float32 (TF32 tensor cores, tile `default` only; fp32 gradients run the naive backward).
# Their tile variants:
#   default        the per-rank DefaultBox (kernel_traits.hpp): 1D 64, 2D 8x8, 3D 4x4x4; float32
#                  at head dims > 128 uses 32-key KV boxes (1D 32, 2D 4x8, 3D 2x4x4) to fit
#                  shared memory
#   q16x8_kv4x8    fused_fwd, rank 2, head dim 128 only: query box 16x8, KV box 4x8
#                  (benchmarks/NOTES_fused.md); the backward of that forward uses fused_bwd's
#                  default boxes (the forward's tile does not change out/lse)
#   q128w8         fused_fwd, ranks 1 and 2, head dims 64 and 128: 128-query box (1D 128, 2D
#                  16x8) on 8 warps of 16 query rows, 64-key KV box (1D 64, 2D 8x8), 3-stage
#                  cp.async K/V pipeline (benchmarks/NOTES_fused.md); experimental, never picked
#                  automatically (forward(..., tile="q128w8") / FASTNA_FUSED_TILE=q128w8)
#
# gemm_na (GEMM-based unfused NA: PN = qk, NN = av, IN = inverse neighborhood, one TU holding all
# three for a rank x dtype x head dim x arch; include/fastna/gemm, src/gemm_launch.cuh) follows the
# fused rules (archs >= 80, per head dim, tile `default` only) but also instantiates float32
# (TF32 tensor-core kernels) when FASTNA_DTYPES lists it.

# hopper_fwd (the sm90a fused forward, include/fastna/hopper) is registered in the instance list
# as fused_fwd tile `hopper`, so the fused forward's binding, checks and tests run it.  Only for
# the arch 90a, float16/bfloat16 and the head dims in FASTNA_HOPPER_HEAD_DIMS that are also in
# FASTNA_HEAD_DIMS; any other arch yields no hopper instance (not an error).  Head dim 32 (NAT /
# DiNAT) runs two CTAs per SM with 64-key boxes; 256 (64-key boxes, 2 stages) is listed too and
# is built when FASTNA_HEAD_DIMS has it (not in its default).
# hopper_bwd (the sm90a fused backward, include/fastna/hopper/backward*.hpp) follows the same
# rules for its own head dims and is registered as fused_bwd tile `hopper`: the fused backward's
# binding picks it when the forward ran tile `hopper` (problems it does not take, and head dims
# it has no instance of, run the sm80 backward).
set(FASTNA_HOPPER_HEAD_DIMS "32;64;128;256")
# small_fwd (the small-window fused forward, include/fastna/fused/small_window*.hpp: one warp =
# 16 queries whose whole key halo is one register tile; NAT / DiNAT windows) is registered as
# fused_fwd tile `small` for ranks 1 and 2, float16/bfloat16, archs >= 80 and the head dims in
# both FASTNA_SMALL_HEAD_DIMS and FASTNA_HEAD_DIMS.  The binding runs it in place of the
# automatic tile (or of `hopper`) when the problem's windows fit (small_window_shape.hpp).
set(FASTNA_SMALL_HEAD_DIMS "32;64;128")
set(FASTNA_HOPPER_BWD_HEAD_DIMS "64;128")

set(FASTNA_TEMPLATE_DIR "${CMAKE_CURRENT_LIST_DIR}/templates")

function(_fastna_dtype_ctype dtype out)
  if(dtype STREQUAL "float32")
    set(${out} "float" PARENT_SCOPE)
  elseif(dtype STREQUAL "float16")
    set(${out} "__half" PARENT_SCOPE)
  elseif(dtype STREQUAL "bfloat16")
    set(${out} "__nv_bfloat16" PARENT_SCOPE)
  else()
    message(FATAL_ERROR "fastna: unknown dtype '${dtype}' in FASTNA_DTYPES (float32, float16, bfloat16)")
  endif()
endfunction()

# CUTLASS element type of the fused kernels for (kernel, dtype); empty when the dtype has no
# instance of that kernel (float32: fused_fwd and gemm_na, both on TF32 tensor cores).
function(_fastna_dtype_cutlass kernel dtype out)
  if(dtype STREQUAL "float32" AND (kernel STREQUAL "fused_fwd" OR kernel STREQUAL "gemm_na"))
    set(${out} "float" PARENT_SCOPE)
  elseif(dtype STREQUAL "float16")
    set(${out} "cutlass::half_t" PARENT_SCOPE)
  elseif(dtype STREQUAL "bfloat16")
    set(${out} "cutlass::bfloat16_t" PARENT_SCOPE)
  else()
    set(${out} "" PARENT_SCOPE)
  endif()
endfunction()

# Tile variants of a fused kernel for (rank, dtype, head dim): "name|QBox|KBox[|Warps|Stages]"
# entries (Warps / Stages: fused_fwd's ForwardTraits parameters; left out = 0 / 2, the original
# tiles).
function(_fastna_fused_tiles kernel rank dtype hdim out)
  set(_default "typename fastna::fused::DefaultBox<${rank}>::type")
  if(dtype STREQUAL "float32")
    # TF32 forward: the default tile only (build time); fp32 K/V boxes take twice the shared
    # memory, so head dims > 128 halve the KV box (Q 64 x D + 2 stages of K and V <= 227 KiB).
    set(_kbox "${_default}")
    if(hdim GREATER 128)
      set(_half_box_1 "fastna::fused::Box<1, 32>")
      set(_half_box_2 "fastna::fused::Box<2, 4, 8>")
      set(_half_box_3 "fastna::fused::Box<3, 2, 4, 4>")
      set(_kbox "${_half_box_${rank}}")
    endif()
    set(${out} "default|${_default}|${_kbox}" PARENT_SCOPE)
    return()
  endif()
  set(_tiles "default|${_default}|${_default}")
  if(kernel STREQUAL "fused_fwd" AND rank EQUAL 2 AND hdim EQUAL 128)
    list(APPEND _tiles "q16x8_kv4x8|fastna::fused::Box<2, 16, 8>|fastna::fused::Box<2, 4, 8>")
  endif()
  if(kernel STREQUAL "fused_fwd" AND (hdim EQUAL 64 OR hdim EQUAL 128))
    if(rank EQUAL 1)
      list(APPEND _tiles "q128w8|fastna::fused::Box<1, 128>|fastna::fused::Box<1, 64>|8|3")
    elseif(rank EQUAL 2)
      list(APPEND _tiles "q128w8|fastna::fused::Box<2, 16, 8>|fastna::fused::Box<2, 8, 8>|8|3")
    endif()
  endif()
  set(${out} "${_tiles}" PARENT_SCOPE)
endfunction()

function(fastna_generate_instances)
  cmake_parse_arguments(ARG "" "OUT_DIR;SOURCES_VAR_PREFIX" "KERNELS;RANKS;DTYPES;ARCHS;HEAD_DIMS" ${ARGN})
  file(MAKE_DIRECTORY "${ARG_OUT_DIR}")
  set(_inc "// Generated by cmake/FastnaGenerator.cmake:\n")
  string(APPEND _inc "// FASTNA_INSTANCE(kernel, rank, dtype, head_dim, tile, arch, symbol)\n")
  set(_instances "")
  foreach(_kernel IN LISTS ARG_KERNELS)
    if(NOT EXISTS "${FASTNA_TEMPLATE_DIR}/${_kernel}.cu.in")
      file(GLOB _known RELATIVE "${FASTNA_TEMPLATE_DIR}" "${FASTNA_TEMPLATE_DIR}/*.cu.in")
      string(REPLACE ".cu.in" "" _known "${_known}")
      message(FATAL_ERROR "fastna: unknown kernel '${_kernel}' in FASTNA_KERNELS (known: ${_known})")
    endif()
  endforeach()
  foreach(_rank IN LISTS ARG_RANKS)
    if(NOT _rank MATCHES "^[123]$")
      message(FATAL_ERROR "fastna: bad rank '${_rank}' in FASTNA_RANKS (1, 2 or 3)")
    endif()
  endforeach()
  foreach(_hd IN LISTS ARG_HEAD_DIMS)
    if(NOT _hd MATCHES "^[0-9]+$" OR _hd LESS 32 OR _hd GREATER 256)
      message(FATAL_ERROR "fastna: bad head dim '${_hd}' in FASTNA_HEAD_DIMS (multiples of 32 up to 256)")
    endif()
    math(EXPR _rem "${_hd} % 32")
    if(NOT _rem EQUAL 0)
      message(FATAL_ERROR "fastna: bad head dim '${_hd}' in FASTNA_HEAD_DIMS (multiples of 32 up to 256)")
    endif()
  endforeach()
  foreach(_fk IN ITEMS fused_fwd fused_bwd gemm_na hopper_fwd hopper_bwd small_fwd)
    if(_fk IN_LIST ARG_KERNELS)
      if(NOT ARG_HEAD_DIMS)
        message(FATAL_ERROR "fastna: FASTNA_KERNELS has ${_fk} but FASTNA_HEAD_DIMS is empty")
      endif()
      if(NOT "float16" IN_LIST ARG_DTYPES AND NOT "bfloat16" IN_LIST ARG_DTYPES
         AND NOT ((_fk STREQUAL "gemm_na" OR _fk STREQUAL "fused_fwd") AND "float32" IN_LIST ARG_DTYPES))
        message(WARNING "fastna: ${_fk} has no instance for FASTNA_DTYPES=${ARG_DTYPES}")
      endif()
    endif()
  endforeach()

  foreach(_arch IN LISTS ARG_ARCHS)
    set(_sources "")
    string(REGEX MATCH "^[0-9]+" _sm "${_arch}")
    foreach(_kernel IN LISTS ARG_KERNELS)
      set(_fused OFF)
      if(_kernel MATCHES "^hopper_" AND NOT _arch STREQUAL "90a")
        continue()  # wgmma / setmaxnreg: sm_90a only
      endif()
      if(_kernel MATCHES "^fused_" OR _kernel STREQUAL "gemm_na" OR _kernel MATCHES "^hopper_"
         OR _kernel STREQUAL "small_fwd")
        set(_fused ON)
        if(_sm LESS 80)
          message(STATUS "fastna: ${_kernel} needs sm80 or newer: no instances for arch ${_arch}")
          continue()
        endif()
      endif()
      foreach(_rank IN LISTS ARG_RANKS)
        if(_kernel STREQUAL "small_fwd" AND _rank EQUAL 3)
          continue()  # no 3D configuration (small_window_shape.hpp)
        endif()
        foreach(_dtype IN LISTS ARG_DTYPES)
          _fastna_dtype_ctype(${_dtype} FASTNA_CTYPE)
          set(FASTNA_KERNEL ${_kernel})
          set(FASTNA_RANK ${_rank})
          set(FASTNA_DTYPE ${_dtype})
          set(FASTNA_ARCH ${_arch})
          set(FASTNA_SM ${_sm})
          # Kernels of different archs must not share symbols (see FASTNA_NAIVE_NS in
          # include/fastna/naive/common.cuh), hence the per-arch inline namespace.
          set(FASTNA_ARCH_NS "sm${_arch}")
          if(_fused)
            _fastna_dtype_cutlass(${_kernel} ${_dtype} FASTNA_CUTLASS_TYPE)
            if(NOT FASTNA_CUTLASS_TYPE)
              continue()  # no fp32 instance of this kernel (fused_bwd, hopper_*)
            endif()
            set(_variants "")
            foreach(_hd IN LISTS ARG_HEAD_DIMS)
              if(_kernel MATCHES "^hopper_")
                set(_hopper_dims ${FASTNA_HOPPER_HEAD_DIMS})
                if(_kernel STREQUAL "hopper_bwd")
                  set(_hopper_dims ${FASTNA_HOPPER_BWD_HEAD_DIMS})
                endif()
                if(_hd IN_LIST _hopper_dims)
                  list(APPEND _variants "${_hd}|hopper|-|-")
                endif()
                continue()
              endif()
              if(_kernel STREQUAL "small_fwd")
                if(_hd IN_LIST FASTNA_SMALL_HEAD_DIMS)
                  list(APPEND _variants "${_hd}|small|-|-")
                endif()
                continue()
              endif()
              _fastna_fused_tiles(${_kernel} ${_rank} ${_dtype} ${_hd} _tiles)
              foreach(_t IN LISTS _tiles)
                list(APPEND _variants "${_hd}|${_t}")
              endforeach()
            endforeach()
          else()
            set(_variants "0|default|-|-")
          endif()
          foreach(_v IN LISTS _variants)
            string(REPLACE "|" ";" _parts "${_v}")
            list(GET _parts 0 FASTNA_HEAD_DIM)
            list(GET _parts 1 FASTNA_TILE)
            list(GET _parts 2 FASTNA_QBOX)
            list(GET _parts 3 FASTNA_KBOX)
            set(FASTNA_WARPS 0)
            set(FASTNA_STAGES 2)
            list(LENGTH _parts _nparts)
            if(_nparts GREATER 5)
              list(GET _parts 4 FASTNA_WARPS)
              list(GET _parts 5 FASTNA_STAGES)
            endif()
            if(_fused)
              set(FASTNA_INSTANCE_NAME "${_kernel}_r${_rank}_${_dtype}_d${FASTNA_HEAD_DIM}_${FASTNA_TILE}_sm${_arch}")
            else()
              set(FASTNA_INSTANCE_NAME "${_kernel}_r${_rank}_${_dtype}_sm${_arch}")
            endif()
            set(_out "${ARG_OUT_DIR}/sm${_arch}/${FASTNA_INSTANCE_NAME}.cu")
            configure_file("${FASTNA_TEMPLATE_DIR}/${_kernel}.cu.in" "${_out}" @ONLY)
            list(APPEND _sources "${_out}")
            set(_registered ${_kernel})
            if(_kernel STREQUAL "hopper_fwd" OR _kernel STREQUAL "small_fwd")
              set(_registered fused_fwd)
            elseif(_kernel STREQUAL "hopper_bwd")
              set(_registered fused_bwd)
            endif()
            string(APPEND _inc "FASTNA_INSTANCE(${_registered}, ${_rank}, ${_dtype}, ${FASTNA_HEAD_DIM}, "
                               "${FASTNA_TILE}, ${_arch}, ${FASTNA_INSTANCE_NAME})\n")
            list(APPEND _instances "${_registered}|${_rank}|${_dtype}|${FASTNA_HEAD_DIM}|${FASTNA_TILE}|${_arch}")
          endforeach()
        endforeach()
      endforeach()
    endforeach()
    set(${ARG_SOURCES_VAR_PREFIX}_${_arch} "${_sources}" PARENT_SCOPE)
  endforeach()
  # Write through configure_file so an unchanged list does not touch the file's timestamp and
  # force the binding to recompile.
  file(WRITE "${ARG_OUT_DIR}/fastna_instances.inc.tmp" "${_inc}")
  configure_file("${ARG_OUT_DIR}/fastna_instances.inc.tmp" "${ARG_OUT_DIR}/fastna_instances.inc" COPYONLY)
  set(${ARG_SOURCES_VAR_PREFIX}_INSTANCES "${_instances}" PARENT_SCOPE)
endfunction()
