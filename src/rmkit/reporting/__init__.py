"""What ``rmkit eval`` draws and prints: :mod:`.plots` (PNG figures) and :mod:`.report` (tables and
``report.md``), pure functions of scores and metrics that the kinds (:mod:`rmkit.kinds`) call."""
