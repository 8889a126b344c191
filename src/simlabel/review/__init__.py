"""A review page in the browser for the labels simlabel makes, and the way its decisions flow back.

* :mod:`.queues`: the files simlabel writes (suspects, augment, flip, side-info weights, basis exports)
  read as review items;
* :mod:`.decisions`: the append-only, crash-safe ``decisions.jsonl``;
* :mod:`.server`: the local Starlette page (``simlabel review QUEUE... --catalog CATALOG``);
* :mod:`.export`: decisions back into label files, ``--basis-labels``, a ``clean`` column or Label Studio tasks
  (``simlabel review export``).
"""
