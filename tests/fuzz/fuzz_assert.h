/* SPDX-License-Identifier: GPL-2.0 */
/* fuzz_assert.h - the harnesses' assertion: report where, then abort. */
#ifndef FUZZ_ASSERT_H
#define FUZZ_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define FZ_ASSERT(c)							\
	do {								\
		if (!(c)) {						\
			fprintf(stderr, "%s:%d: assertion failed: %s\n",\
				__FILE__, __LINE__, #c);		\
			abort();					\
		}							\
	} while (0)

#endif /* FUZZ_ASSERT_H */
