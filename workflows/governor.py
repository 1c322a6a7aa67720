"""GovernorWorkflow: the deployment's current whitelist and the brakes people hold.

One per deployment (task queue). It owns what must be one thing for every incident and
every worker: which whitelist is current, the pauses people set, and the entries'
breakers. Decisions do not queue here: each entry has its own ``EntryGovernorWorkflow``
(``workflows/entry_governor.py``) that decides and counts; the activities hand it the
brake they read from this workflow's memo (``Brakes``, written with every change to it).

The current whitelist has one owner. Workers announce theirs at start and on each
reload; a whitelist of a lower ``metadata.revision`` never replaces the current one (a
worker not yet upgraded, restarted with its old file, is refused and told so). Incidents
never change it: an incident decides under its own snapshot at its entry's governor.
People's actions (pause, resume, closing a breaker) are checked against the current
whitelist only.

Messages:
  update ``announce(Announce) -> str``        a worker's whitelist; adopted unless older
  update ``pause(Pause)``, ``resume(Resume)``, ``close_breaker(CloseBreaker)``  people, checked
  update ``open_breaker(OpenBreaker)``         an entry governor counted enough failures
  query  ``current(entry_id) -> Current``      the current whitelist's hash, what deciding on
                                               the entry needs of it, and the entry's brake
  query  ``brake(entry_id) -> Brake``          what takes autonomy away from the entry now
  memo   ``Brakes.memo``                       the whitelist's hash and every hold: read by a
                                               describe, so a fleet's decisions need no worker here
  query  ``status() -> GovernorStatus``
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from selfheal.identity import attest
    from selfheal.contract.governor import (
        GOVERNOR_WORKFLOW, Announce, Brake, Brakes, CloseBreaker, Current, EntryStatus, Governor, GovernorState, GovernorStatus,
        LogEvent, OpenBreaker, Pause, Proven, Resume,
    )
    from selfheal.whitelist import Whitelist
    from selfheal.whitelist.durations import format_duration
    from selfheal.whitelist.vocabulary import Hold

RETAIN = timedelta(days=30)  # nothing older counts against any sensible window
MAX_LOG = 200                # governor events kept in state; the history keeps them all


@workflow.defn(name=GOVERNOR_WORKFLOW)
class GovernorWorkflow:
    @workflow.init
    def __init__(self, state: GovernorState) -> None:
        self._state = state
        self._updates = 0

    @workflow.run
    async def run(self, state: GovernorState) -> None:
        self._publish()  # a run started with a state; a continued one carries its memo, and writes nothing
        await workflow.wait_condition(
            lambda: workflow.info().is_continue_as_new_suggested() or self._updates >= self._state.updates_per_run
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self._state, memo=workflow.memo())

    # --- workers -----------------------------------------------------------------------

    @workflow.update(name=Governor.ANNOUNCE)
    def announce(self, ann: Announce) -> str:
        self._updates += 1
        current, sha = self._state.whitelist, ann.whitelist_sha256
        if sha == self._state.whitelist_sha256:
            return f"whitelist {sha[:12]} is current"
        revision = ann.whitelist.metadata.revision
        if current is not None and revision < current.metadata.revision:
            reason = (f"whitelist {sha[:12]} ({ann.source or 'a worker'}) has revision {revision}, older than the "
                      f"current {self._state.whitelist_sha256[:12]} (revision {current.metadata.revision}): kept the current one")
            self._log("selfheal", "refused", None, reason)
            return reason
        note = ""
        if current is not None and revision == current.metadata.revision:
            # Nothing orders two different files of one revision but the order they arrive in.
            note = f"; same revision {revision} as {self._state.whitelist_sha256[:12]}: bump metadata.revision with every change"
        self._state.whitelist, self._state.whitelist_sha256 = ann.whitelist, sha
        self._publish()
        reason = f"whitelist {sha[:12]} (revision {revision}, {ann.source or 'a worker'}) is current{note}"
        self._log("selfheal", "announced", None, reason)
        return reason

    @workflow.update(name=Governor.OPEN_BREAKER)
    def open_breaker(self, cmd: OpenBreaker) -> str:
        self._updates += 1
        if cmd.entry_id in self._state.breakers:
            return f"the breaker of {cmd.entry_id} is already open"
        self._state.breakers[cmd.entry_id] = Hold(by="selfheal", at=workflow.now(), reason=cmd.reason)
        self._publish()
        self._log("selfheal", "breaker_opened", cmd.entry_id, cmd.reason)
        return "breaker opened"

    # --- people ------------------------------------------------------------------------
    # As with approvals, the rules run in the handlers (not validators), so that every
    # refusal is recorded: Temporal keeps no trace of an update its validator rejected.

    @workflow.update(name=Governor.PAUSE)
    def pause(self, cmd: Pause) -> str:
        self._updates += 1
        wl = self._whitelist_or_refuse(cmd.by, "pause")
        if cmd.by not in wl.named_people():
            self._refuse(cmd.by, cmd.entry_id, f"pause refused: {cmd.by!r} is not named in the whitelist")
        if cmd.entry_id is not None and wl.entry(cmd.entry_id) is None:
            self._refuse(cmd.by, cmd.entry_id, f"pause refused: no entry {cmd.entry_id!r}")
        # Pausing only takes autonomy away: a typed name may do it, and is recorded as such.
        unproven = self._proven(cmd, "pause", wl) if cmd.signature else None
        if unproven:
            self._refuse(cmd.by, cmd.entry_id, f"pause refused: {unproven}")
        verified = bool(cmd.signature)
        hold = Hold(by=cmd.by, at=workflow.now(), reason=cmd.reason, until=cmd.until)
        if cmd.entry_id is None:
            self._state.pause_all = hold
        else:
            self._state.pauses[cmd.entry_id] = hold
        self._publish()
        self._log(cmd.by, "paused", cmd.entry_id, cmd.reason + (f" (until {cmd.until.isoformat()})" if cmd.until else ""),
                  verified=verified)
        return f"autonomy paused for {cmd.entry_id or 'every entry'} by {cmd.by}"

    @workflow.update(name=Governor.RESUME)
    def resume(self, cmd: Resume) -> str:
        self._updates += 1
        wl = self._whitelist_or_refuse(cmd.by, "resume")
        affected = [e.id for e in wl.entries] if cmd.entry_id is None else [cmd.entry_id]
        if cmd.entry_id is not None and wl.entry(cmd.entry_id) is None:
            self._refuse(cmd.by, cmd.entry_id, f"resume refused: no entry {cmd.entry_id!r}")
        # Resuming gives autonomy back: only someone who may approve everything it affects.
        not_allowed = [e for e in affected if cmd.by not in wl.allowed_approvers(e)]
        if not_allowed:
            self._refuse(cmd.by, cmd.entry_id, f"resume refused: {cmd.by!r} may not approve {', '.join(not_allowed)}")
        unproven = self._proven(cmd, "resume", wl)
        if unproven:
            self._refuse(cmd.by, cmd.entry_id, f"resume refused: {unproven}")
        if cmd.entry_id is None:
            self._state.pause_all = None
        else:
            self._state.pauses.pop(cmd.entry_id, None)
        self._publish()
        self._log(cmd.by, "resumed", cmd.entry_id, "", verified=True)
        return f"autonomy resumed for {cmd.entry_id or 'every entry'} by {cmd.by}"

    @workflow.update(name=Governor.CLOSE_BREAKER)
    def close_breaker(self, cmd: CloseBreaker) -> str:
        self._updates += 1
        wl = self._whitelist_or_refuse(cmd.by, "close breaker")
        if wl.entry(cmd.entry_id) is None:
            self._refuse(cmd.by, cmd.entry_id, f"breaker close refused: no entry {cmd.entry_id!r}")
        if cmd.by not in wl.allowed_approvers(cmd.entry_id):
            self._refuse(cmd.by, cmd.entry_id, f"breaker close refused: {cmd.by!r} may not approve {cmd.entry_id}")
        unproven = self._proven(cmd, "close_breaker", wl)
        if unproven:
            self._refuse(cmd.by, cmd.entry_id, f"breaker close refused: {unproven}")
        if self._state.breakers.pop(cmd.entry_id, None) is None:
            return f"the breaker of {cmd.entry_id} is not open"
        self._publish()
        self._log(cmd.by, "breaker_closed", cmd.entry_id, cmd.reason, verified=True)
        return f"breaker of {cmd.entry_id} closed by {cmd.by}"

    # --- queries -----------------------------------------------------------------------

    @workflow.query(name=Governor.BRAKE)
    def brake(self, entry_id: str) -> Brake:
        now = workflow.now()
        holds = (self._state.pause_all, self._state.pauses.get(entry_id))
        return Brake(paused=[h for h in holds if h and h.active(now)], breaker=self._state.breakers.get(entry_id))

    @workflow.query(name=Governor.CURRENT)
    def current(self, entry_id: str) -> Current:
        wl = self._state.whitelist
        if wl is None:
            return Current()
        return Current(whitelist_sha256=self._state.whitelist_sha256, revision=wl.metadata.revision,
                       policy=wl.for_entry(entry_id), brake=self.brake(entry_id))

    @workflow.query(name=Governor.STATUS)
    def status(self) -> GovernorStatus:
        now = workflow.now()
        wl = self._state.whitelist
        entries = [EntryStatus(entry_id=e.id, paused=self.brake(e.id).paused, breaker=self._state.breakers.get(e.id),
                               window=format_duration(e.autonomy.window))
                   for e in (wl.entries if wl else [])]
        pause_all = self._state.pause_all if self._state.pause_all and self._state.pause_all.active(now) else None
        return GovernorStatus(whitelist_sha256=self._state.whitelist_sha256, revision=wl.metadata.revision if wl else 0,
                              pause_all=pause_all, entries=entries, log=self._state.log[-50:])

    # --- helpers -----------------------------------------------------------------------

    def _brakes(self) -> Brakes:
        wl = self._state.whitelist
        return Brakes(whitelist_sha256=self._state.whitelist_sha256, revision=wl.metadata.revision if wl else 0,
                      pause_all=self._state.pause_all, pauses=self._state.pauses, breakers=self._state.breakers)

    def _publish(self) -> None:
        """Write the brakes to the memo (``Brakes.memo``) where they changed: in this workflow
        task, with the update that changed them, so no reader sees the update's answer first.
        Each entry's hold has a key of its own: a change writes what changed, and a hold
        released is a key removed."""
        want, written = self._brakes().memo(), workflow.memo()  # the memo as written so far, upserts included
        changed = {key: value for key, value in want.items() if written.get(key) != value}
        removed = {key: None for key in written if key not in want}
        if changed or removed:
            workflow.upsert_memo(changed | removed)

    def _whitelist_or_refuse(self, by: str, what: str) -> Whitelist:
        if self._state.whitelist is None:
            self._refuse(by, None, f"{what} refused: no worker has told the governor its whitelist yet")
        return self._state.whitelist

    def _proven(self, cmd: Proven, action: str, wl: Whitelist) -> str | None:
        """Why ``cmd`` does not prove its sender (None if it does). Giving authority back
        (resume, closing a breaker) is an approval too: a typed name proves nothing."""
        if not cmd.signature:
            return "unverified: a typed name proves nothing; sign it (the selfheal CLI signs with your SSH key)"
        try:
            statement = attest.check(cmd.statement, cmd.signature, keys=wl.identity(cmd.by).ssh_keys,
                                     attestation_keys=wl.attestation_keys)
        except attest.Unproven as exc:
            return f"signature refused: {exc}"
        expected = {"action": action, "subject": workflow.info().workflow_id, "entry": cmd.entry_id,
                    "person": cmd.by, "channel": cmd.channel}
        for field, want in expected.items():
            if getattr(statement, field) != want:
                return f"signature refused: signed for {field} {getattr(statement, field)!r}, not {want!r}"
        if statement.expires <= workflow.now():
            return f"signature refused: expired at {statement.expires.isoformat()}"
        if statement.nonce in self._state.nonces:
            return "signature refused: replayed: this signed statement was already used"
        self._state.nonces.append(statement.nonce)
        del self._state.nonces[:-1000]
        return None

    def _refuse(self, by: str, entry_id: str | None, reason: str):
        self._log(by, "refused", entry_id, reason)
        raise ApplicationError(reason, type="GovernorRefused", non_retryable=True)

    def _log(self, by: str, action: str, entry_id: str | None, reason: str, verified: bool = False) -> None:
        self._state.log.append(LogEvent(at=workflow.now(), by=by[:80], action=action, entry_id=entry_id, reason=reason[:500],
                                        verified=verified))
        del self._state.log[:-MAX_LOG]
