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

	__KTCPVS_CMD_MAX,
	KTCPVS_CMD_MAX = __KTCPVS_CMD_MAX - 1
};

enum ktcpvs_attr {
	KTCPVS_A_UNSPEC,
	KTCPVS_A_MODULE_VERSION,	/* string: module version */
	KTCPVS_A_PROTO_VERSION,		/* u32: KTCPVS_PROTO_VERSION */
	KTCPVS_A_SERVICE_COUNT,		/* u32: services in this namespace */
	KTCPVS_A_GENERATION,		/* u64: configuration generation */

	__KTCPVS_A_MAX,
	KTCPVS_A_MAX = __KTCPVS_A_MAX - 1
};

#endif /* _UAPI_KTCPVS_H */
