/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kt_compat.h - the only environment the pure-C core sees.
 *
 * The core (HTTP parser, rule matcher, hashing) is compiled three ways:
 * into ktcpvs.ko, into the l7ctl Python extension, and into libFuzzer
 * harnesses.  It must not include anything but this header: no libc
 * beyond freestanding types, no kernel headers, no allocation.
 */
#ifndef KT_COMPAT_H
#define KT_COMPAT_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/string.h>
#include <linux/compiler.h>
#else
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#ifndef likely
#define likely(x)	__builtin_expect(!!(x), 1)
#define unlikely(x)	__builtin_expect(!!(x), 0)
#endif
#ifndef fallthrough
#define fallthrough	__attribute__((__fallthrough__))
#endif
typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int32_t s32;
typedef int64_t s64;
#endif

#endif /* KT_COMPAT_H */
