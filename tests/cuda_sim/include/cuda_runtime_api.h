// Stands in for the CUDA runtime header when kernels are compiled for the CPU simulation.
#pragma once
#include "cuda_sim/device.h"
#include "cuda_sim/runtime.h"
