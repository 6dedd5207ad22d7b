"""xai_course: the methods of the course "Explaining CNNs", one module per chapter.

Import the modules you need (``import xai_course as xc`` gives them all):
``core``, ``data``, ``models``, ``gradient``, ``plot``, ``widgets``, ``evaluate``, ``lrp``, ``shap``,
``occlusion``, ``layers`` (the output of a layer), ``inversion``, ``rules``, ``fuzzy``, ``deep_taylor``,
``deconvnet``, ``guide`` (the method registry and chooser of chapter 08), ``exercises`` (the self-checks of
the exercises), ``training`` (training the course's networks and shipping their weights), ``zoo`` (pretrained
ImageNet networks and real photographs, chapter 09), ``cam`` (Grad-CAM) and ``concepts`` (concept activation
vectors, TCAV), chapter 10.
"""

from . import (
    cam,
    concepts,
    core,
    data,
    deconvnet,
    deep_taylor,
    evaluate,
    exercises,
    fuzzy,
    gradient,
    guide,
    inversion,
    layers,
    lrp,
    models,
    occlusion,
    plot,
    rules,
    shap,
    training,
    widgets,
    zoo,
)

__all__ = ["cam", "concepts", "core", "data", "deconvnet", "deep_taylor", "evaluate", "exercises", "fuzzy",
           "gradient", "guide", "inversion", "layers", "lrp", "models", "occlusion", "plot", "rules", "shap",
           "training", "widgets", "zoo"]  # fmt: skip
__version__ = "0.1.0"
