# Build selection options and CUDA arch resolution.
#
# Every FASTNA_* selection can come from a -D cache variable or from the environment, because
# `pip install .` gives users no convenient way to pass -D flags; the cache variable wins when
# both are set.  Lists accept ';', ',' or spaces as separators ("80;90a", "80,90a", "80 90a").

# fastna_setting(<var> <default> <doc>): resolves <var> in the caller's scope.
function(fastna_setting var default doc)
  set(${var} "" CACHE STRING "${doc}")
  set(_v "${${var}}")
  if("${_v}" STREQUAL "" AND DEFINED ENV{${var}})
    set(_v "$ENV{${var}}")
  endif()
  if("${_v}" STREQUAL "")
    set(_v "${default}")
  endif()
  string(REGEX REPLACE "[ ,]+" ";" _v "${_v}")
  list(REMOVE_ITEM _v "")
  list(REMOVE_DUPLICATES _v)
  set(${var}_RESOLVED "${_v}" PARENT_SCOPE)
endfunction()

# Maps an nvidia-smi compute capability ("9.0") to the arch fastna compiles for it.  Hopper gets
# the arch-specific "90a" because the Hopper kernels (wgmma, setmaxnreg) only exist there.
function(_fastna_cc_to_arch cc out)
  string(STRIP "${cc}" cc)
  string(REPLACE "." ";" _parts "${cc}")
  list(GET _parts 0 _major)
  list(GET _parts 1 _minor)
  set(_arch "${_major}${_minor}")
  if(_arch STREQUAL "90")
    set(_arch "90a")
  endif()
  set(${out} "${_arch}" PARENT_SCOPE)
endfunction()

# fastna_resolve_cuda_archs(<out>): <out> = list of archs, empty for a host-only build.
# Also sets FASTNA_CUDA_ARCHS_EXPLICIT in the caller's scope (TRUE when the user asked).
function(fastna_resolve_cuda_archs out)
  fastna_setting(FASTNA_CUDA_ARCHS "auto"
    "CUDA archs to compile, e.g. \"80;90a\"; \"none\" = host-only; \"auto\" = the local GPU's arch")
  set(_req "${FASTNA_CUDA_ARCHS_RESOLVED}")
  string(TOLOWER "${_req}" _req_lower)
  set(_explicit TRUE)
  if(_req_lower STREQUAL "none" OR _req_lower STREQUAL "off" OR _req_lower STREQUAL "0")
    message(STATUS "fastna: FASTNA_CUDA_ARCHS=none: host-only build (no CUDA kernels)")
    set(${out} "" PARENT_SCOPE)
    set(FASTNA_CUDA_ARCHS_EXPLICIT TRUE PARENT_SCOPE)
    return()
  endif()
  if(_req_lower STREQUAL "auto" OR _req_lower STREQUAL "native")
    set(_explicit FALSE)
    set(_req "")
    find_program(FASTNA_NVIDIA_SMI nvidia-smi)
    if(FASTNA_NVIDIA_SMI)
      execute_process(COMMAND "${FASTNA_NVIDIA_SMI}" --query-gpu=compute_cap --format=csv,noheader
        OUTPUT_VARIABLE _ccs RESULT_VARIABLE _rc ERROR_QUIET)
      if(_rc EQUAL 0)
        string(REPLACE "\n" ";" _ccs "${_ccs}")
        foreach(_cc IN LISTS _ccs)
          if(_cc MATCHES "^[ \t]*[0-9]+\\.[0-9]+")
            _fastna_cc_to_arch("${_cc}" _a)
            list(APPEND _req "${_a}")
          endif()
        endforeach()
        list(REMOVE_DUPLICATES _req)
      endif()
    endif()
    if(NOT _req)
      message(STATUS
        "fastna: no GPU detected (nvidia-smi): host-only build.  To cross-compile the CUDA "
        "kernels without a GPU, set FASTNA_CUDA_ARCHS=\"80;90a\" (or any arch list).")
      set(${out} "" PARENT_SCOPE)
      set(FASTNA_CUDA_ARCHS_EXPLICIT FALSE PARENT_SCOPE)
      return()
    endif()
    message(STATUS "fastna: detected GPU arch(s): ${_req}")
  endif()
  foreach(_a IN LISTS _req)
    if(NOT _a MATCHES "^[0-9]+[af]?$")
      message(FATAL_ERROR "fastna: bad entry '${_a}' in FASTNA_CUDA_ARCHS (expected e.g. 80 or 90a)")
    endif()
  endforeach()
  set(${out} "${_req}" PARENT_SCOPE)
  set(FASTNA_CUDA_ARCHS_EXPLICIT ${_explicit} PARENT_SCOPE)
endfunction()

# fastna_enable_cuda(<archs_var>): enables the CUDA language when archs are requested.  Clears
# <archs_var> (host-only) when no usable nvcc is found for an auto request; fails for an explicit
# one, since silently dropping requested kernels would only surface later at import time.
macro(fastna_enable_cuda archs_var)
  if(${archs_var})
    if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
      find_program(_fastna_nvcc nvcc HINTS "$ENV{CUDA_HOME}/bin" "$ENV{CUDA_PATH}/bin" /usr/local/cuda/bin)
      if(_fastna_nvcc)
        # Prefer the toolkit's own nvcc over wrapper scripts so CMake finds the toolkit root.
        get_filename_component(_fastna_nvcc_real "${_fastna_nvcc}" REALPATH)
        if(EXISTS /usr/local/cuda/bin/nvcc AND NOT _fastna_nvcc_real MATCHES "/cuda[^/]*/bin/nvcc$")
          set(_fastna_nvcc /usr/local/cuda/bin/nvcc)
        endif()
        set(CMAKE_CUDA_COMPILER "${_fastna_nvcc}")
      endif()
    endif()
    include(CheckLanguage)
    check_language(CUDA)
    if(CMAKE_CUDA_COMPILER)
      enable_language(CUDA)
      find_package(CUDAToolkit REQUIRED)
      message(STATUS "fastna: CUDA ${CMAKE_CUDA_COMPILER_VERSION} (${CMAKE_CUDA_COMPILER}), archs: ${${archs_var}}")
    elseif(FASTNA_CUDA_ARCHS_EXPLICIT)
      message(FATAL_ERROR "fastna: FASTNA_CUDA_ARCHS=${${archs_var}} but no CUDA compiler (nvcc) was found. "
        "Put nvcc on PATH, set CUDACXX, or set FASTNA_CUDA_ARCHS=none for a host-only build.")
    else()
      message(STATUS "fastna: no nvcc found: host-only build")
      set(${archs_var} "")
    endif()
  endif()
endmacro()

# fastna_target_cuda_archs(<target> <arch>...): per-arch -gencode flags.  CMake < 3.29 does not
# know arch-specific targets such as 90a, so CUDA_ARCHITECTURES is turned off and the flags
# are passed by hand.  Plain archs also embed PTX so newer GPUs can JIT them; "a"/"f" archs are
# tied to one GPU family, where PTX would not help.
function(fastna_target_cuda_archs target)
  set(_flags "")
  foreach(_a IN LISTS ARGN)
    list(APPEND _flags "-gencode=arch=compute_${_a},code=sm_${_a}")
    if(_a MATCHES "^[0-9]+$")
      list(APPEND _flags "-gencode=arch=compute_${_a},code=compute_${_a}")
    endif()
  endforeach()
  set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES OFF)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${_flags}>)
endfunction()
