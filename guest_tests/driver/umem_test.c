// SPDX-License-Identifier: GPL-2.0
/*
 * umem_test: a char device handing out its own pages, so that userspace can
 * register driver memory as an RDMA memory region and watch what
 * ib_umem_get() does to it.  See umem_test.h for the interface.
 */

#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/log2.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/overflow.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "umem_test.h"

#define UMEM_TEST_ORDER	ilog2(UMEM_TEST_NPAGES)
#define UMEM_TEST_SIZE	(UMEM_TEST_NPAGES * PAGE_SIZE)

/*
 * One physically contiguous block, split into order-0 pages so that each can
 * be mapped with vm_insert_page() and freed on its own, while the whole block
 * can still be mapped by a single remap_pfn_range() and reached through one
 * kernel address.
 */
static int umem_test_open(struct inode *inode, struct file *file)
{
	struct page *page;

	BUILD_BUG_ON(!is_power_of_2(UMEM_TEST_NPAGES));
	page = alloc_pages(GFP_KERNEL | __GFP_ZERO, UMEM_TEST_ORDER);
	if (!page)
		return -ENOMEM;
	split_page(page, UMEM_TEST_ORDER);
	file->private_data = page;
	return 0;
}

/*
 * Mappings hold the file, so this runs after the last munmap().  A memory
 * region may still pin some pages; dropping only our own reference leaves
 * them to the last unpin.
 */
static int umem_test_release(struct inode *inode, struct file *file)
{
	struct page *page = file->private_data;
	unsigned int i;

	for (i = 0; i < UMEM_TEST_NPAGES; i++)
		put_page(page + i);
	return 0;
}

static int umem_test_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct page *page = file->private_data;
	unsigned long len = vma->vm_end - vma->vm_start;
	unsigned long i;
	int ret;

	if (len > UMEM_TEST_SIZE)
		return -EINVAL;

	switch (vma->vm_pgoff) {
	case UMEM_TEST_MMAP_PAGES >> PAGE_SHIFT:
		for (i = 0; i < len >> PAGE_SHIFT; i++) {
			ret = vm_insert_page(vma, vma->vm_start + i * PAGE_SIZE,
					     page + i);
			if (ret)
				return ret;
		}
		return 0;
	case UMEM_TEST_MMAP_PFNMAP >> PAGE_SHIFT:
		return remap_pfn_range(vma, vma->vm_start, page_to_pfn(page),
				       len, vma->vm_page_prot);
	default:
		return -EINVAL;
	}
}

static long umem_test_info(struct page *page, void __user *arg)
{
	struct umem_test_info info = {
		.npages = UMEM_TEST_NPAGES,
		.page_size = PAGE_SIZE,
	};
	unsigned int i;

	for (i = 0; i < UMEM_TEST_NPAGES; i++)
		info.pfn[i] = page_to_pfn(page + i);
	return copy_to_user(arg, &info, sizeof(info)) ? -EFAULT : 0;
}

/* Copies between the user buffer and the pages through the linear map. */
static long umem_test_copy(struct page *page, void __user *arg, bool write)
{
	struct umem_test_io io;
	void __user *ubuf;
	void *kbuf;
	u64 end;
	unsigned long left;

	if (copy_from_user(&io, arg, sizeof(io)))
		return -EFAULT;
	if (check_add_overflow(io.offset, io.length, &end) ||
	    end > UMEM_TEST_SIZE)
		return -EINVAL;

	kbuf = page_address(page) + io.offset;
	ubuf = u64_to_user_ptr(io.addr);
	if (write)
		left = copy_from_user(kbuf, ubuf, io.length);
	else
		left = copy_to_user(ubuf, kbuf, io.length);
	return left ? -EFAULT : 0;
}

static long umem_test_ioctl(struct file *file, unsigned int cmd,
			    unsigned long arg)
{
	struct page *page = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case UMEM_TEST_INFO:
		return umem_test_info(page, uarg);
	case UMEM_TEST_WRITE:
		return umem_test_copy(page, uarg, true);
	case UMEM_TEST_READ:
		return umem_test_copy(page, uarg, false);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations umem_test_fops = {
	.owner = THIS_MODULE,
	.open = umem_test_open,
	.release = umem_test_release,
	.mmap = umem_test_mmap,
	.unlocked_ioctl = umem_test_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

static struct miscdevice umem_test_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "umem_test",
	.fops = &umem_test_fops,
	.mode = 0600,
};

module_misc_device(umem_test_misc);

MODULE_DESCRIPTION("Driver-owned pages for RDMA memory registration tests");
MODULE_LICENSE("GPL");
