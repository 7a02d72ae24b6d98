"""How the process runs: settings from the environment, the device, the process-wide share of CPU
cores, progress callbacks. May import: io."""
