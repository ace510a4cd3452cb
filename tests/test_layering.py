"""The package's layering: importing one small module loads only what it needs, and the
package's top-level names still work."""
import subprocess
import sys

import pytest


def _modules_after(statement):
    """The ffnumpy modules (and whether tqdm) loaded by ``statement`` in a fresh Python."""
    code = (f"{statement}\nimport sys\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('ffnumpy'))))\n"
            "print('tqdm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    return set(out[0].split()), out[1] == "True"


@pytest.mark.parametrize("statement, allowed", [
    ("import ffnumpy", {"ffnumpy"}),
    ("from ffnumpy import losses", {"ffnumpy", "ffnumpy.losses", "ffnumpy.backend"}),
    ("from ffnumpy import layers", {"ffnumpy", "ffnumpy.layers", "ffnumpy.losses",
                                    "ffnumpy.backend"}),
])
def test_importing_a_small_module_loads_only_what_it_needs(statement, allowed):
    loaded, tqdm = _modules_after(statement)
    assert loaded <= allowed, f"{statement} also loads {sorted(loaded - allowed)}"
    assert not tqdm


def test_the_top_level_names_load_when_used():
    import ffnumpy
    from ffnumpy.config import Config

    assert ffnumpy.Config is Config
    assert set(ffnumpy.__all__) <= set(dir(ffnumpy))
    with pytest.raises(AttributeError):
        ffnumpy.no_such_name
