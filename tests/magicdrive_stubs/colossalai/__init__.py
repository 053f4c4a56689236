"""Stand-in for the ``colossalai`` names MagicDrive-V2's model imports pull in (tests only)."""
