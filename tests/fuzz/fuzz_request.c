// SPDX-License-Identifier: GPL-2.0
/* libFuzzer harness: pipelined requests, split invariance. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_all(data, size, 0);
	return 0;
}
