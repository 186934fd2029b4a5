"""The master: one session skeleton (session) with one part per protocol (bcgc_session,
partial_session), decoders, the rank record and its link (peers, rank_watch, link, transport),
the local cluster launcher, runner, sweep and calibration."""
