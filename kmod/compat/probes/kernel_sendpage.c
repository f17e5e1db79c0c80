// SPDX-License-Identifier: GPL-2.0
/*
 * kernel_sendpage(): gone in 6.5, when sendmsg() with MSG_SPLICE_PAGES took
 * its place (a page passed by reference in a bvec iterator).  The flag
 * alone says nothing: Debian's 6.1 defines MSG_SPLICE_PAGES (a stable
 * backport) while its protocols' sendmsg() do not know it.
 */
#include <linux/net.h>

int kt_probe(struct socket *sock, struct page *page);
int kt_probe(struct socket *sock, struct page *page)
{
	return kernel_sendpage(sock, page, 0, 1, MSG_DONTWAIT);
}
