"""Target-device profiles: data only, one TOML file per device (this file marks the resource package)."""
