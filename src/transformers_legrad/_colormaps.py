"""Colormap lookup tables for `visualize`, embedded so that rendering needs neither matplotlib nor OpenCV.

Each table is 256 sRGB colours, written below as hex triples (``"000004"`` is ``#000004``), entry ``i`` being the
colour of the value ``i / 255``. Where the numbers come from:

- ``inferno`` and ``viridis``: matplotlib's 256-entry float tables (``matplotlib/_cm_listed.py``, matplotlib
  3.11), designed by Nathaniel J. Smith, Stefan van der Walt and Eric Firing and released under CC0; each float
  multiplied by 255 and rounded to the nearest integer.
- ``turbo``: Google's Turbo (Anton Mikhailov, 2019, Apache-2.0), from the same matplotlib file (``_turbo_data``),
  rounded in the same way.
- ``jet``: the output of OpenCV's ``cv2.applyColorMap(np.arange(256, dtype=np.uint8), cv2.COLORMAP_JET)``
  (OpenCV 5.0, converted from BGR to RGB), the colormap that the LeGrad authors' ``legrad.utils.visualize`` uses;
  it is MATLAB's jet, within one level of ``clip(1.5 - |4 t - c|, 0, 1)`` for ``c = 3, 2, 1`` (red, green, blue).

The tables were generated once, by a script that loaded those libraries, and are checked against matplotlib in
``tests/test_visualize.py`` when it is installed.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

_INFERNO_HEX = (
    "000004 010005 010106 010108 02010a 02020c 02020e 030210 040312 040314 050417 060419 07051b 08051d 09061f 0a0722"
    "0b0724 0c0826 0d0829 0e092b 10092d 110a30 120a32 140b34 150b37 160b39 180c3c 190c3e 1b0c41 1c0c43 1e0c45 1f0c48"
    "210c4a 230c4c 240c4f 260c51 280b53 290b55 2b0b57 2d0b59 2f0a5b 310a5c 320a5e 340a5f 360961 380962 390963 3b0964"
    "3d0965 3e0966 400a67 420a68 440a68 450a69 470b6a 490b6a 4a0c6b 4c0c6b 4d0d6c 4f0d6c 510e6c 520e6d 540f6d 550f6d"
    "57106e 59106e 5a116e 5c126e 5d126e 5f136e 61136e 62146e 64156e 65156e 67166e 69166e 6a176e 6c186e 6d186e 6f196e"
    "71196e 721a6e 741a6e 751b6e 771c6d 781c6d 7a1d6d 7c1d6d 7d1e6d 7f1e6c 801f6c 82206c 84206b 85216b 87216b 88226a"
    "8a226a 8c2369 8d2369 8f2469 902568 922568 932667 952667 972766 982766 9a2865 9b2964 9d2964 9f2a63 a02a63 a22b62"
    "a32c61 a52c60 a62d60 a82e5f a92e5e ab2f5e ad305d ae305c b0315b b1325a b3325a b43359 b63458 b73557 b93556 ba3655"
    "bc3754 bd3853 bf3952 c03a51 c13a50 c33b4f c43c4e c63d4d c73e4c c83f4b ca404a cb4149 cc4248 ce4347 cf4446 d04545"
    "d24644 d34743 d44842 d54a41 d74b3f d84c3e d94d3d da4e3c db503b dd513a de5238 df5337 e05536 e15635 e25734 e35933"
    "e45a31 e55c30 e65d2f e75e2e e8602d e9612b ea632a eb6429 eb6628 ec6726 ed6925 ee6a24 ef6c23 ef6e21 f06f20 f1711f"
    "f1731d f2741c f3761b f37819 f47918 f57b17 f57d15 f67e14 f68013 f78212 f78410 f8850f f8870e f8890c f98b0b f98c0a"
    "f98e09 fa9008 fa9207 fa9407 fb9606 fb9706 fb9906 fb9b06 fb9d07 fc9f07 fca108 fca309 fca50a fca60c fca80d fcaa0f"
    "fcac11 fcae12 fcb014 fcb216 fcb418 fbb61a fbb81d fbba1f fbbc21 fbbe23 fac026 fac228 fac42a fac62d f9c72f f9c932"
    "f9cb35 f8cd37 f8cf3a f7d13d f7d340 f6d543 f6d746 f5d949 f5db4c f4dd4f f4df53 f4e156 f3e35a f3e55d f2e661 f2e865"
    "f2ea69 f1ec6d f1ed71 f1ef75 f1f179 f2f27d f2f482 f3f586 f3f68a f4f88e f5f992 f6fa96 f8fb9a f9fc9d fafda1 fcffa4"
)

_VIRIDIS_HEX = (
    "440154 440256 450457 450559 46075a 46085c 460a5d 460b5e 470d60 470e61 471063 471164 471365 481467 481668 481769"
    "48186a 481a6c 481b6d 481c6e 481d6f 481f70 482071 482173 482374 482475 482576 482677 482878 482979 472a7a 472c7a"
    "472d7b 472e7c 472f7d 46307e 46327e 46337f 463480 453581 453781 453882 443983 443a83 443b84 433d84 433e85 423f85"
    "424086 424186 414287 414487 404588 404688 3f4788 3f4889 3e4989 3e4a89 3e4c8a 3d4d8a 3d4e8a 3c4f8a 3c508b 3b518b"
    "3b528b 3a538b 3a548c 39558c 39568c 38588c 38598c 375a8c 375b8d 365c8d 365d8d 355e8d 355f8d 34608d 34618d 33628d"
    "33638d 32648e 32658e 31668e 31678e 31688e 30698e 306a8e 2f6b8e 2f6c8e 2e6d8e 2e6e8e 2e6f8e 2d708e 2d718e 2c718e"
    "2c728e 2c738e 2b748e 2b758e 2a768e 2a778e 2a788e 29798e 297a8e 297b8e 287c8e 287d8e 277e8e 277f8e 27808e 26818e"
    "26828e 26828e 25838e 25848e 25858e 24868e 24878e 23888e 23898e 238a8d 228b8d 228c8d 228d8d 218e8d 218f8d 21908d"
    "21918c 20928c 20928c 20938c 1f948c 1f958b 1f968b 1f978b 1f988b 1f998a 1f9a8a 1e9b8a 1e9c89 1e9d89 1f9e89 1f9f88"
    "1fa088 1fa188 1fa187 1fa287 20a386 20a486 21a585 21a685 22a785 22a884 23a983 24aa83 25ab82 25ac82 26ad81 27ad81"
    "28ae80 29af7f 2ab07f 2cb17e 2db27d 2eb37c 2fb47c 31b57b 32b67a 34b679 35b779 37b878 38b977 3aba76 3bbb75 3dbc74"
    "3fbc73 40bd72 42be71 44bf70 46c06f 48c16e 4ac16d 4cc26c 4ec36b 50c46a 52c569 54c568 56c667 58c765 5ac864 5cc863"
    "5ec962 60ca60 63cb5f 65cb5e 67cc5c 69cd5b 6ccd5a 6ece58 70cf57 73d056 75d054 77d153 7ad151 7cd250 7fd34e 81d34d"
    "84d44b 86d549 89d548 8bd646 8ed645 90d743 93d741 95d840 98d83e 9bd93c 9dd93b a0da39 a2da37 a5db36 a8db34 aadc32"
    "addc30 b0dd2f b2dd2d b5de2b b8de29 bade28 bddf26 c0df25 c2df23 c5e021 c8e020 cae11f cde11d d0e11c d2e21b d5e21a"
    "d8e219 dae319 dde318 dfe318 e2e418 e5e419 e7e419 eae51a ece51b efe51c f1e51d f4e61e f6e620 f8e621 fbe723 fde725"
)

_TURBO_HEX = (
    "30123b 321543 33184a 341b51 351e58 36215f 372466 38276d 392a73 3a2d79 3b2f80 3c3286 3d358b 3e3891 3f3b97 3f3e9c"
    "4040a2 4143a7 4146ac 4249b1 424bb5 434eba 4451bf 4454c3 4456c7 4559cb 455ccf 455ed3 4661d6 4664da 4666dd 4669e0"
    "466be3 476ee6 4771e9 4773eb 4776ee 4778f0 477bf2 467df4 4680f6 4682f8 4685fa 4687fb 458afc 458cfd 448ffe 4391fe"
    "4294ff 4196ff 4099ff 3e9bfe 3d9efe 3ba0fd 3aa3fc 38a5fb 37a8fa 35abf8 33adf7 31aff5 2fb2f4 2eb4f2 2cb7f0 2ab9ee"
    "28bceb 27bee9 25c0e7 23c3e4 22c5e2 20c7df 1fc9dd 1ecbda 1ccdd8 1bd0d5 1ad2d2 1ad4d0 19d5cd 18d7ca 18d9c8 18dbc5"
    "18ddc2 18dec0 18e0bd 19e2bb 19e3b9 1ae4b6 1ce6b4 1de7b2 1fe9af 20eaac 22ebaa 25eca7 27eea4 2aefa1 2cf09e 2ff19b"
    "32f298 35f394 38f491 3cf58e 3ff68a 43f787 46f884 4af880 4ef97d 52fa7a 55fa76 59fb73 5dfc6f 61fc6c 65fd69 69fd66"
    "6dfe62 71fe5f 75fe5c 79fe59 7dff56 80ff53 84ff51 88ff4e 8bff4b 8fff49 92ff47 96fe44 99fe42 9cfe40 9ffd3f a1fd3d"
    "a4fc3c a7fc3a a9fb39 acfb38 affa37 b1f936 b4f836 b7f735 b9f635 bcf534 bef434 c1f334 c3f134 c6f034 c8ef34 cbed34"
    "cdec34 d0ea34 d2e935 d4e735 d7e535 d9e436 dbe236 dde037 dfdf37 e1dd37 e3db38 e5d938 e7d739 e9d539 ebd339 ecd13a"
    "eecf3a efcd3a f1cb3a f2c93a f4c73a f5c53a f6c33a f7c13a f8be39 f9bc39 faba39 fbb838 fbb637 fcb336 fcb136 fdae35"
    "fdac34 fea933 fea732 fea431 fea130 fe9e2f fe9b2d fe992c fe962b fe932a fe9029 fd8d27 fd8a26 fc8725 fc8423 fb8122"
    "fb7e21 fa7b1f f9781e f9751d f8721c f76f1a f66c19 f56918 f46617 f36315 f26014 f15d13 f05b12 ef5811 ed5510 ec530f"
    "eb500e ea4e0d e84b0c e7490c e5470b e4450a e2430a e14109 df3f08 dd3d08 dc3b07 da3907 d83706 d63506 d43305 d23105"
    "d02f05 ce2d04 cc2b04 ca2a04 c82803 c52603 c32503 c12302 be2102 bc2002 b91e02 b71d02 b41b01 b21a01 af1801 ac1701"
    "a91601 a71401 a41301 a11201 9e1001 9b0f01 980e01 950d01 920b01 8e0a01 8b0902 880802 850702 810602 7e0502 7a0403"
)

_JET_HEX = (
    "000080 000084 000088 00008c 000090 000094 000098 00009c 0000a0 0000a4 0000a8 0000ac 0000b0 0000b4 0000b8 0000bc"
    "0000c0 0000c4 0000c8 0000cc 0000d0 0000d4 0000d8 0000dc 0000e0 0000e4 0000e8 0000ec 0000f0 0000f4 0000f8 0000fc"
    "0000ff 0004ff 0008ff 000cff 0010ff 0014ff 0018ff 001cff 0020ff 0024ff 0028ff 002cff 0030ff 0034ff 0038ff 003cff"
    "0040ff 0044ff 0048ff 004cff 0050ff 0054ff 0058ff 005cff 0060ff 0064ff 0068ff 006cff 0070ff 0074ff 0078ff 007cff"
    "0080ff 0084ff 0088ff 008cff 0090ff 0094ff 0098ff 009cff 00a0ff 00a4ff 00a8ff 00acff 00b0ff 00b4ff 00b8ff 00bcff"
    "00c0ff 00c4ff 00c8ff 00ccff 00d0ff 00d4ff 00d8ff 00dcff 00e0ff 00e4ff 00e8ff 00ecff 00f0ff 00f4ff 00f8ff 00fcff"
    "02fffe 06fffa 0afff6 0efff2 12ffee 16ffea 1affe6 1effe2 22ffde 26ffda 2affd6 2effd2 32ffce 36ffca 3affc6 3effc2"
    "42ffbe 46ffba 4affb6 4effb2 52ffae 56ffaa 5affa6 5effa2 62ff9e 66ff9a 6aff96 6eff92 72ff8e 76ff8a 7aff86 7eff82"
    "82ff7e 86ff7a 8aff76 8eff72 92ff6e 96ff6a 9aff66 9eff62 a2ff5e a6ff5a aaff56 aeff52 b2ff4e b6ff4a baff46 beff42"
    "c2ff3e c6ff3a caff36 ceff32 d2ff2e d6ff2a daff26 deff22 e2ff1e e6ff1a eaff16 eeff12 f2ff0e f6ff0a faff06 feff01"
    "fffc00 fff800 fff400 fff000 ffec00 ffe800 ffe400 ffe000 ffdc00 ffd800 ffd400 ffd000 ffcc00 ffc800 ffc400 ffc000"
    "ffbc00 ffb800 ffb400 ffb000 ffac00 ffa800 ffa400 ffa000 ff9c00 ff9800 ff9400 ff9000 ff8c00 ff8800 ff8400 ff8000"
    "ff7c00 ff7800 ff7400 ff7000 ff6c00 ff6800 ff6400 ff6000 ff5c00 ff5800 ff5400 ff5000 ff4c00 ff4800 ff4400 ff4000"
    "ff3c00 ff3800 ff3400 ff3000 ff2c00 ff2800 ff2400 ff2000 ff1c00 ff1800 ff1400 ff1000 ff0c00 ff0800 ff0400 ff0000"
    "fc0000 f80000 f40000 f00000 ec0000 e80000 e40000 e00000 dc0000 d80000 d40000 d00000 cc0000 c80000 c40000 c00000"
    "bc0000 b80000 b40000 b00000 ac0000 a80000 a40000 a00000 9c0000 980000 940000 900000 8c0000 880000 840000 800000"
)


def _decode(hex_table: str) -> np.ndarray:
    # `bytes.fromhex` skips the spaces between triples; `frombuffer` over bytes gives a read-only array.
    return np.frombuffer(bytes.fromhex(hex_table), dtype=np.uint8).reshape(256, 3)


#: The colormaps by name: read-only uint8 [256, 3] RGB tables.
COLORMAPS = MappingProxyType(
    {
        "inferno": _decode(_INFERNO_HEX),
        "viridis": _decode(_VIRIDIS_HEX),
        "turbo": _decode(_TURBO_HEX),
        "jet": _decode(_JET_HEX),
    }
)


def colormap_table(name: str) -> np.ndarray:
    """The lookup table of a colormap.

    Args:
        name: one of `COLORMAPS`: "inferno", "viridis", "turbo" or "jet".

    Returns:
        Read-only uint8 [256, 3] RGB table; row ``i`` is the colour of the value ``i / 255``.
    """
    if name not in COLORMAPS:
        raise ValueError(f"`colormap` must be one of {sorted(COLORMAPS)}, got {name!r}.")
    return COLORMAPS[name]
