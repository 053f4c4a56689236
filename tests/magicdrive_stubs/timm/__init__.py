"""Stand-in for the few ``timm`` names MagicDrive-V2's model files import (tests only)."""
