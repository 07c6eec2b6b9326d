// Stands in for the CUDA runtime header when kernels are compiled for the CPU simulation.
#pragma once
#include "cuda_runtime_api.h"
