# Locates the CUTLASS/CuTe headers.
#
# Order: CUTLASS_DIR (cache var, then env var), then the nvidia-cutlass wheel through the Python
# interpreter.  The wheel is a build requirement only for its headers; nothing imports it at
# runtime.  Missing CUTLASS is not fatal: the naive kernels and the index math do not need it,
# and a consumer that only wants <fastna/common/index_math.hpp> should not have to install it.
#
# Sets FASTNA_CUTLASS_FOUND and FASTNA_CUTLASS_INCLUDE_DIRS (include/ and tools/util/include/).

set(CUTLASS_DIR "" CACHE PATH "CUTLASS source/install root holding include/cutlass (empty = env var or the nvidia-cutlass wheel)")

function(fastna_find_cutlass)
  set(_root "${CUTLASS_DIR}")
  if(NOT _root AND DEFINED ENV{CUTLASS_DIR})
    set(_root "$ENV{CUTLASS_DIR}")
  endif()
  set(_how "CUTLASS_DIR")
  if(NOT _root)
    set(_py "${Python_EXECUTABLE}")
    if(NOT _py)
      find_package(Python COMPONENTS Interpreter QUIET)
      set(_py "${Python_EXECUTABLE}")
    endif()
    if(_py)
      execute_process(
        COMMAND "${_py}" -c "import cutlass_library, sys; sys.stdout.write(cutlass_library.source_path)"
        OUTPUT_VARIABLE _root ERROR_QUIET RESULT_VARIABLE _rc)
      if(NOT _rc EQUAL 0)
        set(_root "")
      endif()
      set(_how "nvidia-cutlass wheel (${_py})")
    endif()
  endif()

  if(_root AND EXISTS "${_root}/include/cutlass/cutlass.h")
    set(_dirs "${_root}/include")
    if(EXISTS "${_root}/tools/util/include")
      list(APPEND _dirs "${_root}/tools/util/include")
    endif()
    message(STATUS "fastna: CUTLASS headers from ${_how}: ${_root}")
    set(FASTNA_CUTLASS_FOUND TRUE PARENT_SCOPE)
    set(FASTNA_CUTLASS_INCLUDE_DIRS "${_dirs}" PARENT_SCOPE)
  else()
    # Only a warning for fastna's own build; a consumer of the headers may not need CUTLASS.
    set(_level WARNING)
    if(NOT PROJECT_IS_TOP_LEVEL AND NOT DEFINED SKBUILD)
      set(_level STATUS)
    endif()
    message(${_level}
      "fastna: CUTLASS headers not found (set CUTLASS_DIR, or pip install --no-deps "
      "nvidia-cutlass==4.2.0.0).  Continuing: the naive kernels and index math do not need them.")
    set(FASTNA_CUTLASS_FOUND FALSE PARENT_SCOPE)
    set(FASTNA_CUTLASS_INCLUDE_DIRS "" PARENT_SCOPE)
  endif()
endfunction()
