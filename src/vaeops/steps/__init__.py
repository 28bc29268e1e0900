"""The pipeline steps, one function each. The DVC stages (through the CLI) and the Prefect tasks
both call them; a step reads its inputs from the paths in params and writes its outputs there."""
