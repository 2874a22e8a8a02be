// libfabric as the backend loads it at run time (libfabric_loader.cpp): whether it loaded, and why not.
#pragma once

#include "uccl_ep/util/dynamic_library.hpp"

namespace uccl::ep::transport::fabric {

DynamicLibrary& libfabric();

}  // namespace uccl::ep::transport::fabric
