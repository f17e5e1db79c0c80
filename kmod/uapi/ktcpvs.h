/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * ktcpvs.h - generic netlink protocol of ktcpvs, the in-kernel Layer-7
 * content switch.  docs/netlink.md describes it; l7ctl/netlink.py mirrors
 * these numbers.  Numbers are never reused: new commands and attributes are
 * appended, and KTCPVS_PROTO_VERSION is raised on incompatible change.
 */
#ifndef _UAPI_KTCPVS_H
#define _UAPI_KTCPVS_H

#define KTCPVS_GENL_NAME	"ktcpvs"
#define KTCPVS_GENL_VERSION	1
#define KTCPVS_PROTO_VERSION	1

enum ktcpvs_cmd {
	KTCPVS_CMD_UNSPEC,
	KTCPVS_CMD_GET_INFO,	/* doit: module and namespace summary; any user */
	KTCPVS_CMD_FLUSH,	/* doit: drop the namespace's configuration; admin */
	KTCPVS_CMD_CONFIG_BEGIN,	/* doit: start a transaction; admin */
	KTCPVS_CMD_CONFIG_CHUNK,	/* doit: next bytes of the blob; admin */
	KTCPVS_CMD_CONFIG_COMMIT,	/* doit: validate and swap in; admin */
	KTCPVS_CMD_CONFIG_ABORT,	/* doit: drop the transaction; admin */
	KTCPVS_CMD_GET_STATS,		/* dump: counters per object; admin */
	KTCPVS_CMD_GET_CONFIG,		/* dump: the running blob; admin */
	KTCPVS_CMD_SERVER_SET,		/* doit: a server's weight/state; admin */
	KTCPVS_CMD_NOTIFY,		/* multicast: the configuration changed */

	__KTCPVS_CMD_MAX,
	KTCPVS_CMD_MAX = __KTCPVS_CMD_MAX - 1
};

enum ktcpvs_attr {
	KTCPVS_A_UNSPEC,
	KTCPVS_A_MODULE_VERSION,	/* string: module version */
	KTCPVS_A_PROTO_VERSION,		/* u32: KTCPVS_PROTO_VERSION */
	KTCPVS_A_SERVICE_COUNT,		/* u32: services in this namespace */
	KTCPVS_A_GENERATION,		/* u64: configuration generation */
	KTCPVS_A_SOURCE,		/* string: rules file of the config */
	KTCPVS_A_TXN_ID,		/* u32: transaction */
	KTCPVS_A_CONFIG_SIZE,		/* u32: bytes of the blob */
	KTCPVS_A_OFFSET,		/* u32: offset of DATA in the blob */
	KTCPVS_A_DATA,			/* binary: part of the blob */
	KTCPVS_A_CONNECTIONS,		/* u32: live client connections */
	KTCPVS_A_ALLOCS,		/* u32: outstanding allocations */
	KTCPVS_A_OBJ_KIND,		/* u8: KTCPVS_OBJ_* */
	KTCPVS_A_OBJ_NAME,		/* string: service or pool name */
	KTCPVS_A_OBJ_ADDR,		/* binary: family u8, pad, port be16, addr[16] */
	KTCPVS_A_OBJ_POOL,		/* string: pool of a server */
	KTCPVS_A_WEIGHT,		/* u32 */
	KTCPVS_A_STATE,			/* u8: 0 up, 1 drain, 2 down */
	KTCPVS_A_COOLDOWN,		/* u8: 1 while skipped after failures */
	KTCPVS_A_ST_CONNS,		/* u64 */
	KTCPVS_A_ST_ACTIVE,		/* u32 */
	KTCPVS_A_ST_REQUESTS,		/* u64 */
	KTCPVS_A_ST_BYTES_IN,		/* u64: client to backend */
	KTCPVS_A_ST_BYTES_OUT,		/* u64: backend to client */
	KTCPVS_A_ST_ERRORS,		/* binary: u64 per KTCPVS_ERR_* */
	KTCPVS_A_PAD,
	KTCPVS_A_SCHED,			/* u8: a pool's scheduler, KTCPVS_SCHED_NAMES */
	KTCPVS_A_ST_SPLICED,		/* u64: bytes relayed zero-copy (both ways) */
	KTCPVS_A_MAX_CONNECTIONS,	/* u32: the namespace's connection limit */

	__KTCPVS_A_MAX,
	KTCPVS_A_MAX = __KTCPVS_A_MAX - 1
};

/* Multicast group of KTCPVS_CMD_NOTIFY messages */
#define KTCPVS_MCGRP_CONFIG	"config"

/* Object kinds in KTCPVS_CMD_GET_STATS */
#define KTCPVS_OBJ_SERVICE	1
#define KTCPVS_OBJ_POOL		2
#define KTCPVS_OBJ_SERVER	3

/* Error kinds, the order of KTCPVS_A_ST_ERRORS */
#define KTCPVS_ERR_NAMES \
	"parse", "header_timeout", "blocked", "redirect", "no_route", \
	"unavailable", "connect", "bad_gateway", "backend_timeout", \
	"backend_reset", "client_reset", "limit", "source_limit", "retry", \
	"local"

/* Schedulers, in the order of KTCPVS_A_SCHED */
#define KTCPVS_SCHED_NAMES \
	"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh"

/* Largest blob (the rule table format's bound) and DATA chunk. */
#define KTCPVS_CONFIG_MAX	(8U << 20)
#define KTCPVS_CHUNK_MAX	32768

#endif /* _UAPI_KTCPVS_H */
