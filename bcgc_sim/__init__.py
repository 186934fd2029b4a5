"""bcgc-sim: block coordinate gradient coding, predicted and measured.

The library, with no processes and no sockets of its own: model/ (the runtime model), partial/
(the partial-straggler model), wire/ (the protocol and how both ends move its frames), paper/
(the papers' numbers and their reproduction), and at the top the scheme registry (schemes),
config, problems, results, predict, validation, comparison, intervals, sweep_summary, and the
figures (plots, in the look of style). entry/ is the entry layer (the `bcgc` command): it alone
composes master/, workers/ and the library, and nothing in the library imports it.
"""

__version__ = "0.1.0"
