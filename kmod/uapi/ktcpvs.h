/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * ktcpvs.h - generic netlink protocol of ktcpvs, the in-kernel Layer-7
 * content switch.  docs/netlink.md describes it; l7ctl/netlink.py mirrors
 * these numbers.  Numbers are never reused: new commands and attributes are
 * appended, and KTCPVS_PROTO_VERSION is raised on incompatible change.
 */
#ifndef _UAPI_KTCPVS_H
#define _UAPI_KTCPVS_H

#include <linux/types.h>

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
	KTCPVS_CMD_LOG,			/* multicast ("log"): access log records */
	KTCPVS_CMD_CHECK,		/* multicast ("config"): a health check changed a server's state */
	KTCPVS_CMD_GET_LOG,		/* dump: the namespace's most recent access log records; admin */
	KTCPVS_CMD_TLS_ADOPT,		/* doit: take a client socket with kernel TLS on it; admin */

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
	KTCPVS_A_CHECK_STATE,		/* u8: KTCPVS_CHECK_* of a server */
	KTCPVS_A_CHECK_LAST,		/* string: the last check's result ("200", "refused", "timeout", ...) */
	KTCPVS_A_CHECK_CHANGES,		/* u64: times the check changed the server's state */
	KTCPVS_A_LOG_RECORDS,		/* binary: struct ktcpvs_log_rec, each followed by its strings */
	KTCPVS_A_LOG_DROPPED,		/* u64: records dropped in this namespace so far */
	KTCPVS_A_FD,			/* u32: the caller's file descriptor of a socket */
	KTCPVS_A_TLS_NAMES,		/* binary: the host names of a TLS connection's
					 * certificate, each NUL-terminated, lower case,
					 * "*." for a one-label wildcard: a request for
					 * another host is answered 421 */

	__KTCPVS_A_MAX,
	KTCPVS_A_MAX = __KTCPVS_A_MAX - 1
};

/* Multicast groups: configuration and check changes; access log records */
#define KTCPVS_MCGRP_CONFIG	"config"
#define KTCPVS_MCGRP_LOG	"log"

/* A server's health as its active check sees it (KTCPVS_A_CHECK_STATE) */
#define KTCPVS_CHECK_NONE	0	/* no check configured */
#define KTCPVS_CHECK_UP		1
#define KTCPVS_CHECK_DOWN	2

/*
 * How an exchange ended (struct ktcpvs_log_rec.end).  KTCPVS_END_REFUSED is
 * an answer of the switch itself (status says which); KTCPVS_END_LOCAL one
 * the switch gave for want of its own resources.
 */
#define KTCPVS_END_NORMAL		0	/* the response went out whole */
#define KTCPVS_END_CLIENT_ABORT		1	/* the client closed or reset first */
#define KTCPVS_END_SERVER_ERROR		2	/* the server closed, reset or answered badly */
#define KTCPVS_END_TIMEOUT		3	/* a timeout of the switch fired */
#define KTCPVS_END_REFUSED		4	/* refused by the parser, a rule or a limit */
#define KTCPVS_END_ANSWERED		5	/* answered by an answer rule, no server */
#define KTCPVS_END_LOCAL		6	/* the switch ran out of memory or ports */

/*
 * One access log record, in host byte order (the reader is on the same
 * machine), followed by service_len + pool_len + host_len + path_len bytes
 * of strings in that order, then zero padding to the next multiple of 8.
 * KTCPVS_A_LOG_RECORDS carries several back to back.  Durations are
 * microseconds from the first byte of the request head; 0 when the step
 * never happened.  The kernel keeps the namespace's last KTCPVS_LOG_RING
 * records for KTCPVS_CMD_GET_LOG and sends new ones in batches to the "log"
 * group (KTCPVS_CMD_LOG); a batch leaves when it is full or 250 ms old.  Addresses: family 4 or 6, IPv4 in the first 4 bytes.
 */
struct ktcpvs_log_rec {
	__u64 time_ns;		/* CLOCK_REALTIME of the request's first byte */
	__u64 bytes_in;		/* request bytes from the client */
	__u64 bytes_out;	/* response bytes to the client */
	__u32 connect_us;	/* backend connection ready (reused: 0) */
	__u32 first_byte_us;	/* first response byte from the server */
	__u32 total_us;		/* the exchange's end */
	__u32 rule_line;	/* source line of the matched rule, 0: none */
	__u8 client[16];
	__u8 server[16];
	__u16 client_port;
	__u16 server_port;
	__u16 status;		/* the status the client got, 0: none */
	__u8 client_family;
	__u8 server_family;	/* 0: no server */
	__u8 method;		/* the parser's enum kt_http_method */
	__u8 end;		/* KTCPVS_END_* */
	__u8 version;		/* 10 or 11 */
	__u8 pad;
	__u16 service_len;
	__u16 pool_len;
	__u16 host_len;
	__u16 path_len;		/* at most KTCPVS_LOG_PATH_MAX */
	__u16 method_len;	/* extension methods: their name follows the path */
	__u16 pad2[3];
};

#define KTCPVS_LOG_PATH_MAX	1024
#define KTCPVS_LOG_RING		1024

/* Object kinds in KTCPVS_CMD_GET_STATS */
#define KTCPVS_OBJ_SERVICE	1
#define KTCPVS_OBJ_POOL		2
#define KTCPVS_OBJ_SERVER	3

/* Error kinds, the order of KTCPVS_A_ST_ERRORS */
#define KTCPVS_ERR_NAMES \
	"parse", "header_timeout", "blocked", "redirect", "no_route", \
	"unavailable", "connect", "bad_gateway", "backend_timeout", \
	"backend_reset", "client_reset", "limit", "source_limit", "retry", \
	"local", "answered", "misdirected"

/* Schedulers, in the order of KTCPVS_A_SCHED */
#define KTCPVS_SCHED_NAMES \
	"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh"

/* Largest blob (the rule table format's bound) and DATA chunk. */
#define KTCPVS_CONFIG_MAX	(8U << 20)
#define KTCPVS_CHUNK_MAX	32768

#endif /* _UAPI_KTCPVS_H */
