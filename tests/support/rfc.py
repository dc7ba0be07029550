"""The RFC (patches/umem-rfc) against the 6.1 base: the cells it fixes and regresses."""

# What the RFC changes against 6.1, from the kernels' source (guest_tests/expected.toml):
# without FOLL_FORCE a read-only shared mapping (or a read-only private hugetlb one) can be
# registered and a private one is no longer copied; but a read-only MR now pins the zero page,
# the huge zero page, or the driver's or page cache's page in a private mapping, and the
# process's first write moves away from it: the MR goes stale.
EXPECT_FIXED = {
    "test_registration[drv-shared-ro-ro-mr]",
    "test_registration[file-shared-ro-ro-mr]",
    "test_registration[shmem-shared-ro-ro-mr]",
    "test_registration[hugetlb-private-ro-ro-mr]",
    "test_no_side_effect[drv-private-ro-ro-mr]",
    "test_no_side_effect[file-private-ro-ro-mr]",
}
EXPECT_REGRESSED = {
    "test_coherent_after_cpu_write[zero-page-ro-mr]",
    "test_coherent_after_cpu_write[anon-untouched-ro-mr]",
    "test_coherent_after_cpu_write[anon-prot-read-ro-mr]",
    "test_coherent_after_cpu_write[drv-private-ro-ro-mr]",
    "test_coherent_after_cpu_write[file-private-ro-ro-mr]",
    "test_coherent_after_cpu_write[thp-zero-page-ro-mr]",
}
