# The library target `flashattn`: the API, the CPU implementation and, with CUDA, the kernels
# (included by CMakeLists.txt unless the Python build links a prebuilt one).
add_library(flashattn
  src/api/tensor.cpp
  src/api/validate.cpp
  src/api/dropout.cpp
  src/api/attention.cpp
  src/cpu/attention_cpu.cpp
)
add_library(flashattn::flashattn ALIAS flashattn)
target_include_directories(flashattn
  PUBLIC $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include> $<INSTALL_INTERFACE:include>
  PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
target_link_libraries(flashattn PRIVATE Threads::Threads)
# The public header uses std::optional: consumers (find_package included) need C++17 too.
target_compile_features(flashattn PUBLIC cxx_std_17)
target_compile_options(flashattn PRIVATE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion>)
if(FLASHATTN_CPU_NATIVE)
  set_source_files_properties(src/cpu/attention_cpu.cpp PROPERTIES COMPILE_OPTIONS "-march=native")
endif()

if(FLASHATTN_WITH_CUDA)
  find_package(CUDAToolkit REQUIRED)
  # The kernel instantiations are generated (tools/generate_instantiations.py) and checked in.
  include(src/cuda/instantiations/sources.cmake)
  # Which of them to compile: FLASHATTN_HEAD_DIMS and FLASHATTN_DTYPES (lists, ';' or ','
  # separated; empty: all; pip install . takes them from the environment, see pyproject.toml). A
  # call that needs a kernel left out gets an error naming the option; a head dim runs on the next
  # compiled one up.
  set(FLASHATTN_HEAD_DIMS "" CACHE STRING
      "CUDA head dims to compile, some of: ${FLASHATTN_ALL_HEAD_DIMS} (empty: all)")
  set(FLASHATTN_DTYPES "" CACHE STRING
      "CUDA dtypes to compile, some of: ${FLASHATTN_ALL_DTYPES} (empty: all)")
  foreach(knob HEAD_DIMS DTYPES)
    string(REPLACE "," ";" chosen "${FLASHATTN_${knob}}")
    if(chosen STREQUAL "")
      set(chosen "${FLASHATTN_ALL_${knob}}")
    endif()
    # A bit a choice, in the generated table's order (cuda/dispatch.h reads the mask).
    set(mask 0)
    foreach(choice IN LISTS chosen)
      list(FIND FLASHATTN_ALL_${knob} "${choice}" index)
      if(index EQUAL -1)
        message(FATAL_ERROR "FLASHATTN_${knob}: '${choice}' is not one of ${FLASHATTN_ALL_${knob}}")
      endif()
      math(EXPR mask "${mask} | (1 << ${index})")
    endforeach()
    set(FLASHATTN_${knob}_CHOSEN "${chosen}")
    set(FLASHATTN_${knob}_MASK ${mask})
  endforeach()
  set(kernels "")
  foreach(src IN LISTS FLASHATTN_INSTANTIATIONS)
    if(NOT src MATCHES "_([a-z0-9]+)_hdim([0-9]+)\\.cu$")
      message(FATAL_ERROR "unexpected instantiation file name: ${src}")
    endif()
    if(CMAKE_MATCH_1 IN_LIST FLASHATTN_DTYPES_CHOSEN AND
       CMAKE_MATCH_2 IN_LIST FLASHATTN_HEAD_DIMS_CHOSEN)
      list(APPEND kernels "${src}")
    endif()
  endforeach()
  message(STATUS "flashattn: CUDA kernels for head dims ${FLASHATTN_HEAD_DIMS_CHOSEN}, dtypes "
                 "${FLASHATTN_DTYPES_CHOSEN}, architectures ${CMAKE_CUDA_ARCHITECTURES}")
  target_sources(flashattn PRIVATE src/cuda/combine.cu src/cuda/device_info.cu src/cuda/dispatch.cu
                                   src/cuda/sm90/tensor_map.cu src/cuda/varlen_tail.cu ${kernels})
  target_compile_definitions(flashattn PRIVATE
    FLASHATTN_CUDA_HEAD_DIM_MASK=${FLASHATTN_HEAD_DIMS_MASK}
    FLASHATTN_CUDA_DTYPE_MASK=${FLASHATTN_DTYPES_MASK})
  # The shared CUDA runtime by default: one runtime per process, shared with PyTorch or the
  # application (kernels registered with a second, static runtime are invisible to the first).
  option(FLASHATTN_CUDART_STATIC "Link the CUDA runtime statically" OFF)
  if(FLASHATTN_CUDART_STATIC)
    target_link_libraries(flashattn PRIVATE CUDA::cudart_static)
  else()
    target_link_libraries(flashattn PUBLIC CUDA::cudart)
  endif()
  target_compile_definitions(flashattn PRIVATE FLASHATTN_WITH_CUDA=1)
  target_compile_options(flashattn PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall -Xptxas=--warn-on-spills>)
else()
  target_sources(flashattn PRIVATE src/api/no_cuda.cpp)
endif()
set_target_properties(flashattn PROPERTIES POSITION_INDEPENDENT_CODE ON)
