// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer harness: pipelined responses (the config byte's top bits pick
 * the request method: GET, HEAD or CONNECT), split invariance.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_all(data, size, 1);
	return 0;
}
