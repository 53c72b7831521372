"""Generated data and local servers for the demo, the tests and the benches; needs the ``demo`` extra
(``pip install 'proximate[demo]'``), which brings moto's S3 server.

Nothing in the runtime core imports this package: ``synthetic`` generates CF data, ``local_s3`` runs an S3 server
(moto) on loopback, ``quick_demo`` is ``proximate demo --quick`` (the two-region cluster alone, without Prefect).
"""
