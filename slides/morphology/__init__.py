"""Red-cell morphology: the reviewer grades red-cell findings on a slide (ICSH 2015).

* ``catalogue`` (pure): the findings, their grading scales, ICSH cut-offs and codes;
* ``report`` (pure): the frozen section of the signed report and its lines (page, PDF, CSV);
* ``fhir`` / ``hl7`` (pure): the same findings as FHIR Observations and HL7 v2 OBX segments;
* ``models``, ``services`` (writes), ``selectors`` (reads), ``views`` (the verification form).
"""
