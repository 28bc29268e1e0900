"""The malloc policy the entry points set: glibc accepts it, and setting it twice is harmless."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_given_glibc_when_freed_memory_is_kept_then_both_mallopt_settings_are_accepted():
    # A fresh interpreter: the policy is process-wide and cached, so this process may hold it.
    code = (
        "import sys\n"
        "from vaeops.allocator import keep_freed_memory\n"
        "assert keep_freed_memory() and keep_freed_memory(), 'mallopt refused a setting'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
