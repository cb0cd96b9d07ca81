"""The pipeline's drivers: the loop that runs one frame, and the loop that runs a batch.

Every frame goes through the same steps (``Fabric`` composes them, ``docs/architecture.md``,
"The pipeline"): **account** it on its ingress port, **admit** it (size, group source), **decide**
where it goes (learn its source, look up its destination, or flood) and **send** it to each
egress entry — a port, or an optional stage standing in for one (``Egress``). The admission and
the decision are ``Fabric.decide``, written once; the two drivers here only add what makes the
hot path cheap:

* **The flow cache.** A decision that changed nothing but the freshness of a MAC entry at the
  current coarse time (the source was known on this very port, no drop was counted, no guard or
  capture needs to see the frame) is kept, keyed by the frame's first 12 bytes (its addresses;
  16 while VLANs are on: the tag too), with its ingress port. A frame of an admissible size with
  the same key from the same port gets the same egress entries without asking the table again.
  The fabric forgets every kept decision whenever anything a decision reads changes: the MAC
  table (an entry added, moved or removed), the clock (each tick: entries are refreshed at most
  once per tick anyway), the ports, the spanning tree's blocked set, the stages composed.
* **Runs in a batch.** Frames of one batch mostly share their addresses: a frame whose key is the
  previous frame's (and whose decision was kept) is appended to that decision's output lists
  without even a cache lookup. Each egress entry then gets its frames of the batch in one
  ``send_batch``, in order. An entry that rewrites the frame (a VLAN tag added or removed,
  ``Retag``) puts its own copy in its port's list, and such a port gets its frames in order:
  the runs as received in ``send_batch`` calls, the rewritten ones with ``send_nowait``.

Both drivers return the receivers whose send answered "full" (``FabricPort.send_nowait``): the
ingress loop holds the sender back for them. ``NO_RECEIVERS``, a shared empty tuple, when none.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from umlswitch.fabric.batch import FrameBatch

Frame = bytes | memoryview


class Egress(Protocol):
    """Where the fabric sends a frame: a port, or a stage standing in for one (an impaired
    port's sender, a VLAN tag rewrite). ``id`` is the port's; the sends answer "full" as
    ``FabricPort``'s do."""

    @property
    def id(self) -> int: ...

    def send_nowait(self, frame: Frame) -> bool: ...

    def send_batch(self, batch: FrameBatch, indices: list[int]) -> bool: ...


class Rewriting:
    """The base of an egress entry that sends its port a copy of the frame made its own way
    (``vlan_stage.Retag``): in a batch, its copies go in its ``target``'s list, in order."""

    __slots__ = ()
    target: Any  # the entry (a port, or a stage standing in for one) it sends the copies to

    def rewrite(self, frame: Frame) -> Frame | None:
        """The copy for the port; None if it gets none (counted)."""
        raise NotImplementedError


EgressSet = tuple[Any, ...]  # Egress entries (a port is one)
Receivers = tuple[Any, ...]  # FabricPorts
NO_RECEIVERS: Receivers = ()  # what forwarding returns when no receiver answered "full"
NOWHERE: EgressSet = ()  # the decision for a frame that goes nowhere (dropped, counted)
FlowKey = tuple[bytes]
Flows = dict[FlowKey, tuple[Any, EgressSet]]  # key -> (ingress port, decision)
_MISS = (None, NOWHERE)


class Decide(Protocol):
    """``Fabric.decide``: admit the frame of ``size`` bytes at ``offset`` in ``data`` and say
    where it goes; keep the decision under ``key`` if it may be reused (None: never)."""

    def __call__(
        self, ingress: Any, data: Frame, offset: int, size: int, key: FlowKey | None
    ) -> EgressSet: ...


Forward = Callable[..., Receivers]  # (ingress, frame) or (ingress, read buffer, size)
ForwardBatch = Callable[[Any, FrameBatch], Receivers]
Resolve = Callable[[Receivers, Any], Receivers]


def key_length(vlans: bool) -> int:
    """How many leading bytes of a frame its decision reads: the addresses, and the tag."""
    return 16 if vlans else 12


def single_driver(
    decide: Decide, flows: Flows, key_len: int, sizes: range, resolve: Resolve
) -> Forward:
    """``Fabric.forward`` (and ``Fabric.receive``): one frame, through the flow cache or
    ``decide``, to its entries."""
    flows_get = flows.get
    unpack = struct.Struct(f"{key_len}s").unpack_from

    def forward(ingress: Any, frame: Frame, size: int = -1) -> Receivers:
        """``frame``; or, given ``size``, the first ``size`` bytes of the read buffer ``frame``
        (``size`` its real length: a giant that did not fit is measured, dropped, never read)."""
        if size < 0:
            size = len(frame)
        else:
            frame = frame[:size]
        stats = ingress.stats
        stats.rx_frames += 1
        stats.rx_bytes += size
        if size in sizes:
            owner, egress = flows_get(unpack(frame), _MISS)
            if owner is not ingress:  # decided anew (the key is unpacked again: rare)
                egress = decide(ingress, frame, 0, size, unpack(frame))
        else:
            egress = decide(ingress, frame, 0, size, None)  # counts a runt or giant
        for entry in egress:
            if entry.send_nowait(frame):
                return _send_rest(egress, entry, frame, resolve)
        return NO_RECEIVERS

    return forward


def _send_rest(egress: EgressSet, entry: Any, frame: Frame, resolve: Resolve) -> Receivers:
    """``entry`` answered "full": send the frame to the entries after it, and return every
    receiver that answered so."""
    full = resolve(NO_RECEIVERS, entry)
    for other in egress[egress.index(entry) + 1 :]:
        if other.send_nowait(frame):
            full = resolve(full, other)
    return full


def batch_driver(
    decide: Decide, flows: Flows, key_len: int, sizes: range, resolve: Resolve
) -> ForwardBatch:
    """``Fabric.forward_batch``: every frame of a batch as ``forward`` would, each egress
    entry getting its frames in one ``send_batch``."""
    flows_get = flows.get
    layouts: dict[int, struct.Struct] = {}  # slot size -> the key of every slot, then padding

    def forward_batch(ingress: Any, batch: FrameBatch) -> Receivers:
        count = batch.count
        lengths = batch.lengths
        slot = batch.slot_size
        layout = layouts.get(slot)
        if layout is None:
            layout = layouts[slot] = struct.Struct(f"{key_len}s{slot - key_len}x")
        stats = ingress.stats
        stats.rx_frames += count
        stats.rx_bytes += sum(lengths[:count])
        view = batch.view
        outputs: dict[Any, list[Any]] = {}
        mixed: set[Any] = set()  # ports whose list holds rewritten frames
        last = None  # the key of the previous frame, if its decision was kept
        append: Callable[[int], object] = _nowhere
        for index, size, key in zip(
            range(count), lengths, layout.iter_unpack(batch.data), strict=False
        ):
            if size in sizes:
                if key == last:
                    append(index)
                    continue
                owner, egress = flows_get(key, _MISS)
                if owner is not ingress:
                    egress = decide(ingress, view, index * slot, size, key)
                    owner = flows_get(key, _MISS)[0]
                last = key if owner is ingress else None
            else:
                egress = decide(ingress, view, index * slot, size, None)  # a runt or giant
                last = None
            append = _appender(egress, outputs, mixed, batch)
            append(index)
        return _send_outputs(outputs, mixed, batch, resolve)

    return forward_batch


def _nowhere(index: int) -> None:
    """The output of a frame that goes nowhere."""


def _appender(
    egress: EgressSet, outputs: dict[Any, list[Any]], mixed: set[Any], batch: FrameBatch
) -> Callable[[int], object]:
    """What puts a frame (by its index in ``batch``) in the output lists of ``egress``."""
    if not egress:
        return _nowhere
    puts = []
    for entry in egress:
        rewriting = isinstance(entry, Rewriting)
        target = entry.target if rewriting else entry  # a copy goes to its port's list
        items = outputs.get(target)
        if items is None:
            items = outputs[target] = []
        if rewriting:
            mixed.add(target)
            puts.append(_rewriting(entry, items, batch))
        else:
            puts.append(items.append)
    if len(puts) == 1:
        return puts[0]

    def put_all(index: int) -> None:
        for put in puts:
            put(index)

    return put_all


def _rewriting(entry: Rewriting, items: list[Any], batch: FrameBatch) -> Callable[[int], None]:
    rewrite = entry.rewrite
    frame = batch.frame

    def put(index: int) -> None:
        copy = rewrite(frame(index))
        if copy is not None:
            items.append(copy)

    return put


def _send_outputs(
    outputs: dict[Any, list[Any]], mixed: set[Any], batch: FrameBatch, resolve: Resolve
) -> Receivers:
    full = NO_RECEIVERS
    for entry, items in outputs.items():
        if entry in mixed:
            answer = _send_mixed(entry, items, batch)
        else:
            answer = entry.send_batch(batch, items)
        if answer:
            full = resolve(full, entry)
    return full


def _send_mixed(entry: Any, items: Sequence[Any], batch: FrameBatch) -> bool:
    """A port's frames of the batch, some as received (indices), some rewritten (copies), in
    order: runs of the first kind in one ``send_batch``, the others one by one."""
    run: list[int] = []
    answer = False
    for item in items:
        if isinstance(item, int):
            run.append(item)
            continue
        if run:
            entry.send_batch(batch, run)
            run = []
        answer = entry.send_nowait(item)
    if run:
        answer = entry.send_batch(batch, run)
    return answer
