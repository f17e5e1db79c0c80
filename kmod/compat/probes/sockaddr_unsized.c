// SPDX-License-Identifier: GPL-2.0
/*
 * struct sockaddr_unsized: 6.19 passes it, not struct sockaddr, to
 * kernel_bind(), kernel_connect() and the proto_ops bind and connect
 * methods.  Before, the same call is an incompatible pointer (an error here:
 * probes compile with -Werror).
 */
#include <linux/net.h>
#include <linux/socket.h>

int kt_probe(struct socket *sock, struct sockaddr_storage *ss, int len);
int kt_probe(struct socket *sock, struct sockaddr_storage *ss, int len)
{
	int err = kernel_bind(sock, (struct sockaddr_unsized *)ss, len);

	return err ?: kernel_connect(sock, (struct sockaddr_unsized *)ss, len, 0);
}
