"""Kernel trees and series: sources, a maintainer's tree, mail threads, patches, the sandbox, the work tree, configs and builds.  Imports only rig.core."""
