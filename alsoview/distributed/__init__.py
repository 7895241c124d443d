"""The Ray glue: everything that runs on a Ray cluster (Ray Data, Train, Tune). The pure core
below it never imports this package.

Kept free of imports: Ray workers import these modules to run the functions they were sent.
"""
