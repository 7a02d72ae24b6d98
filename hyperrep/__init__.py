"""hyperrep: generative hyper-representations of model zoos, made visible and usable.

The package follows the data: data -> zoo -> weights -> model -> projection -> sampling ->
evaluate -> novelty/report. It never imports Streamlit; the app in app.py/pages/ calls it.
"""

__version__ = "0.1.0"
