"""The guest machine: its image, QEMU, the serial console, SSH and SysRq.  Imports only rig.core."""
