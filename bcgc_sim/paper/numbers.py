"""The authors' published numbers (spec/bcgc.md §8), in one place for the reproduction script
and the tests.

Expected runtime (§8.1): raw R = E[max_n T_(N-n) S_n(x)] in units of 1e7, from the hard-coded
tables of the authors' plot scripts (CuiYing123456/Block_Gradient_Coding @912a11d,
1_Part__Expectation/file_m/3_plot); columns in PAPER_COLUMNS order. Fig. 3 vectors: the authors'
file_mat/*.mat at the paper point (N = 20, L = 2e4, mu = 1e-3, t0 = 50), n = 0..19.
Completion probability (§8.2): 2_Part__CDF/file_m/3_plot_2022/*/plot_table_*.m, 3 decimals;
mu = 0.1, t0 = 1, t = 10^6.5, N = 20, L = 4e4, M = 50, C = 1 unless varied; columns in
CDF_COLUMNS order (CDF,st, the authors' CSSCA point, is compared with our bcgc-cdf-opt).
"""

# fmt: off
PAPER_COLUMNS = ('bcgc-opt', 'bcgc-t', 'bcgc-f', 'single-bcgc', 'tandon', 'ferdinand-L', 'ferdinand-L/2')
PAPER_R_VS_N: dict[int, tuple[float, ...]] = {  # mu = 1e-3, L = 2e4
    10: (2.41, 2.63, 2.56, 3.0, 3.93, 3.0, 2.86),
    20: (2.87, 3.16, 3.12, 4.01, 5.65, 4.03, 5.28),
    30: (3.3, 3.64, 3.62, 5.04, 6.7, 4.99, 6.35),
    40: (3.68, 4.04, 4.03, 6.0, 7.4, 6.02, 5.86),
    50: (4.03, 4.42, 4.42, 7.03, 7.95, 7.02, 6.95),
}
PAPER_R_VS_MU: dict[float, tuple[float, ...]] = {  # keyed by log10(mu); N = 20, L = 2e4
    -3.4: (5.9, 6.78, 6.49, 6.98, 13.9, 6.99, 10.7),
    -3.2: (4.09, 4.56, 4.47, 5.15, 8.89, 5.22, 7.45),
    -3.0: (2.88, 3.16, 3.14, 3.99, 5.62, 4.0, 5.3),
    -2.8: (2.08, 2.22, 2.22, 3.25, 3.57, 3.25, 4.03),
    -2.6: (1.56, 1.58, 1.58, 2.8, 2.32, 2.81, 3.19),
}
PAPER_R_VS_L: dict[int, tuple[float, ...]] = {  # N = 20, mu = 1e-3 (journal only)
    10000: (1.41, 1.58, 1.57, 2.01, 2.8, 2.0, 2.2),
    20000: (2.86, 3.17, 3.12, 4.01, 5.62, 4.0, 5.35),
    30000: (4.41, 4.74, 4.7, 5.98, 8.4, 5.99, 8.04),
    40000: (6.01, 6.33, 6.25, 8.04, 11.2, 8.0, 10.6),
    50000: (7.61, 7.87, 7.84, 10.1, 14.0, 9.91, 13.7),
}
PAPER_FIG3: dict[str, tuple[int, ...]] = {  # x^(E,opt) is a noisy SPSG output
    'bcgc-opt': (4744, 1052, 396, 314, 265, 226, 209, 200, 193, 198, 210, 236, 249, 197, 56, 390, 632, 1184, 2840, 6209),
    'bcgc-t': (5696, 1076, 609, 444, 366, 325, 303, 294, 294, 303, 321, 349, 390, 448, 534, 663, 868, 1222, 1912, 3583),
    'bcgc-f': (5521, 939, 549, 408, 340, 305, 287, 282, 285, 297, 318, 351, 398, 466, 565, 715, 953, 1356, 2091, 3574),
}
# The spec author's re-run of the authors' SPSG at the paper point (spec §8.1, "Mine").
SPEC_MINE_OPT = (5118, 741, 440, 318, 255, 226, 203, 197, 191, 193, 203, 221, 239, 249, 264, 312, 477, 1012, 2498, 6643)
# Ferdinand r = L/2 per spec §8.1 (N = 10..50): the two readings of the degenerate LP.
SPEC_FERDINAND_HALF_CENTRE = (3.18, 4.16, 5.1, 6.04, 7.01)  # analytic centre (our rule)
SPEC_FERDINAND_HALF_VERTEX = (4.47, 5.65, 6.72, 7.76, 8.78)  # a HiGHS vertex
CDF_COLUMNS = ('bcgc-cdf-opt', 'bcgc-cdf-lg', 'single-bcgc', 'tandon', 'ferdinand-L', 'ferdinand-L/2')
PAPER_P_VS_N: dict[int, tuple[float, ...]] = {  # t = 10^6.5, mu = 0.1, L = 4e4
    10: (0.628, 0.51, 0.442, 0.325, 0.442, 0.363),
    20: (0.905, 0.76, 0.688, 0.692, 0.688, 0.524),
    30: (0.963, 0.939, 0.826, 0.912, 0.826, 0.656),
    40: (0.998, 0.988, 0.924, 0.981, 0.902, 0.794),
    50: (0.999, 0.998, 0.98, 0.996, 0.945, 0.902),
}
PAPER_P_VS_T: dict[float, tuple[float, ...]] = {  # keyed by log10(t); N = 20
    6.5: (0.91, 0.76, 0.686, 0.692, 0.686, 0.525),
    6.55: (0.942, 0.866, 0.786, 0.806, 0.786, 0.651),
    6.6: (0.969, 0.943, 0.861, 0.89, 0.861, 0.759),
    6.65: (0.989, 0.982, 0.915, 0.943, 0.915, 0.843),
    6.7: (0.996, 0.996, 0.95, 0.974, 0.95, 0.904),
}
PAPER_P_VS_MU: dict[float, tuple[float, ...]] = {  # keyed by log10(mu); N = 20
    -1.0: (0.91, 0.76, 0.686, 0.689, 0.687, 0.525),
    -0.9: (0.972, 0.933, 0.768, 0.886, 0.768, 0.651),
    -0.8: (0.993, 0.99, 0.855, 0.97, 0.841, 0.767),
    -0.7: (0.999, 0.999, 0.935, 0.995, 0.902, 0.864),
    -0.6: (1.0, 1.0, 0.991, 0.997, 0.945, 0.935),
}
PAPER_P_VS_L: dict[int, tuple[float, ...]] = {  # N = 20
    20000: (1.0, 1.0, 0.987, 0.997, 0.988, 0.971),
    25000: (0.998, 0.997, 0.954, 0.975, 0.954, 0.879),
    30000: (0.976, 0.967, 0.892, 0.92, 0.893, 0.768),
    35000: (0.952, 0.876, 0.801, 0.823, 0.801, 0.661),
    40000: (0.91, 0.76, 0.687, 0.694, 0.688, 0.526),
}
# fmt: on
