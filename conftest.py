"""Repository-wide pytest setup."""

# Import the installed core first: under --import-mode=importlib pytest names the core's test modules
# "shared_attention.tests.*" and would otherwise put a placeholder "shared_attention" in sys.modules.
import shared_attention  # noqa: F401
