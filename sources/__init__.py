"""Sources: the microscopes and cameras a lab names. Every uploaded cell and every slide comes from one.

The app spans two layers (see .importlinter): its rows (``models``) and their plain reads
(``selectors``) sit below every other app, so that cell images and slides can point at a source
and an upload can resolve one; its audited writes (``services``) and its pages and API (``views``,
``api``) sit above the apps, since they record through the audit trail of ``annotations``.
"""
