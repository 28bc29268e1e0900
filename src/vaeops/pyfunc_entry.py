"""Models-from-code entry point; never imported by the library.

MLflow executes this file when a logged vaeops model is loaded (`mlflow.pyfunc.load_model`), with
the carried copy of the package on sys.path, so no Python object is ever unpickled.
"""

from mlflow.models import set_model

from vaeops.serving import AutoencoderPyfunc

set_model(AutoencoderPyfunc())
