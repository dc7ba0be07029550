"""umem-rig: what ibv_reg_mr() does to a process's memory, kernel by kernel, patch by patch."""
