"""The MITRE ATLAS tactics and techniques the detectors cite, each spelled once.

Detectors (plugins included) import these rather than retyping ids and names,
so that every alert of one technique reads the same in the SIEM.
"""

from __future__ import annotations

from detectors.base import AtlasRef

# Tactics
ATTACK_STAGING = AtlasRef(id="AML.TA0001", name="AI Attack Staging")
RESOURCE_DEVELOPMENT = AtlasRef(id="AML.TA0003", name="Resource Development")
EXFILTRATION = AtlasRef(id="AML.TA0010", name="Exfiltration")
IMPACT = AtlasRef(id="AML.TA0011", name="Impact")

# Techniques and sub-techniques
EXFILTRATION_VIA_API = AtlasRef(id="AML.T0024", name="Exfiltration via AI Inference API")
EXTRACT_MODEL = AtlasRef(id="AML.T0024.002", name="Extract AI Model")
CRAFT_ADVERSARIAL_DATA = AtlasRef(id="AML.T0043", name="Craft Adversarial Data")
BLACK_BOX_OPTIMIZATION = AtlasRef(id="AML.T0043.001", name="Black-Box Optimization")
POISON_TRAINING_DATA = AtlasRef(id="AML.T0020", name="Poison Training Data")
ERODE_MODEL_INTEGRITY = AtlasRef(id="AML.T0031", name="Erode AI Model Integrity")
