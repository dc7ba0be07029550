/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * umem_test: the interface of /dev/umem_test, a char device whose pages the
 * umem-rig guest tests register as RDMA memory regions.
 *
 * Every open() gets its own UMEM_TEST_NPAGES zeroed, physically contiguous
 * pages, freed when the last reference to them goes (release and unpin).
 * mmap() at offset UMEM_TEST_MMAP_PAGES maps them as struct pages
 * (vm_insert_page: GUP can pin them); at offset UMEM_TEST_MMAP_PFNMAP it maps
 * the same pages with remap_pfn_range (VM_PFNMAP: GUP refuses them).
 * guest_tests/umem_dev.py mirrors these numbers.
 */
#ifndef _UAPI_UMEM_TEST_H
#define _UAPI_UMEM_TEST_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define UMEM_TEST_NPAGES	4

#define UMEM_TEST_MMAP_PAGES	0x0
#define UMEM_TEST_MMAP_PFNMAP	0x100000

/* UMEM_TEST_INFO: the page frame number of each of the open file's pages. */
struct umem_test_info {
	__u32 npages;
	__u32 page_size;
	__u64 pfn[UMEM_TEST_NPAGES];
};

/*
 * UMEM_TEST_WRITE copies @length bytes from the user buffer at @addr into the
 * driver's pages at byte @offset, through the kernel's own mapping of them;
 * UMEM_TEST_READ copies the other way.
 */
struct umem_test_io {
	__u64 offset;
	__u64 length;
	__u64 addr;
};

#define UMEM_TEST_INFO	_IOR('u', 0x80, struct umem_test_info)
#define UMEM_TEST_WRITE	_IOW('u', 0x81, struct umem_test_io)
#define UMEM_TEST_READ	_IOW('u', 0x82, struct umem_test_io)

#endif /* _UAPI_UMEM_TEST_H */
