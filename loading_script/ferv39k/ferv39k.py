"""FERV39k loading script for datasets < 4 (datasets 4 no longer runs scripts).

A thin shim: all of the work is done by the ferv39k-hf package's builder, so
this route gives exactly the rows that ``ferv39k_hf.load`` and
``ferv39k-hf build`` give. Install the package first (``pip install ferv39k-hf``),
download the archive by hand (it is licence-gated), then::

    datasets.load_dataset("loading_script/ferv39k", "faces", data_dir="/data/FERV39k", trust_remote_code=True)
"""

from ferv39k_hf.dataset.builder import Ferv39k as _PackageBuilder


class Ferv39k(_PackageBuilder):
    """FERV39k from a hand-downloaded archive; configs faces (default), scenes, videos."""
