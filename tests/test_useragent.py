"""UserAgentParser: a table of real user agents, hostile input, the cache, warm-up, and the Enricher on top."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from centure_audit_middleware.enrich import Enricher, GeoLocator, UserAgentParser, default_parser
from centure_audit_middleware.enrich import useragent as useragent_module
from centure_audit_middleware.enrich.geodb import DEMO_CITIES, build_city_database
from centure_audit_middleware.enrich.useragent import DEVICE_CLASSES, MAX_USER_AGENT_LENGTH, classify_device
from centure_audit_middleware.events import UserAgentInfo

LOGGER = "centure_audit_middleware.enrich"

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)

# (user agent, browser family, OS family, device class). Real strings as sent by the named clients.
AGENTS = [
    # -- desktop ----------------------------------------------------------------------------------------------
    pytest.param(CHROME_WINDOWS, "Chrome", "Windows", "desktop", id="chrome-windows"),
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Firefox",
        "Windows",
        "desktop",
        id="firefox-windows",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Safari/537.36 Edg/124.0.2478.80",
        "Edge",
        "Windows",
        "desktop",
        id="edge-windows",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Safari/537.36 OPR/110.0.0.0",
        "Opera",
        "Windows",
        "desktop",
        id="opera-windows",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Safari/537.36 Vivaldi/6.7.3329.21",
        "Vivaldi",
        "Windows",
        "desktop",
        id="vivaldi-windows",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 6.1; Win64; x64; Trident/7.0; rv:11.0) like Gecko",
        "IE",
        "Windows",
        "desktop",
        id="ie11-windows7",
    ),
    pytest.param(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 "
        "Safari/605.1.15",
        "Safari",
        "Mac OS X",
        "desktop",
        id="safari-macos",
    ),
    pytest.param(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Safari/537.36",
        "Chrome",
        "Mac OS X",
        "desktop",
        id="chrome-macos",
    ),
    pytest.param(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Firefox",
        "Mac OS X",
        "desktop",
        id="firefox-macos",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Chrome",
        "Linux",
        "desktop",
        id="chrome-linux",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Firefox",
        "Linux",
        "desktop",
        id="firefox-linux",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Firefox",
        "Ubuntu",
        "desktop",
        id="firefox-ubuntu",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 "
        "Edg/124.0.2478.80",
        "Edge",
        "Linux",
        "desktop",
        id="edge-linux",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Safari/537.36",
        "Chrome",
        "Chrome OS",
        "desktop",
        id="chromebook",
    ),
    # -- mobile -----------------------------------------------------------------------------------------------
    pytest.param(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4.1 Mobile/15E148 Safari/604.1",
        "Mobile Safari",
        "iOS",
        "mobile",
        id="iphone-safari",
    ),
    pytest.param(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/125.0.6422.80 Mobile/15E148 Safari/604.1",
        "Chrome Mobile iOS",
        "iOS",
        "mobile",
        id="iphone-chrome",
    ),
    pytest.param(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
        "Mobile Safari UI/WKWebView",
        "iOS",
        "mobile",
        id="iphone-webview",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Mobile Safari/537.36",
        "Chrome Mobile",
        "Android",
        "mobile",
        id="android-chrome-reduced-ua",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 "
        "Mobile Safari/537.36",
        "Chrome Mobile",
        "Android",
        "mobile",
        id="galaxy-s24-chrome",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 14; Pixel 8 Pro) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.113 "
        "Mobile Safari/537.36",
        "Chrome Mobile",
        "Android",
        "mobile",
        id="pixel-8-pro-chrome",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
        "Samsung Internet",
        "Android",
        "mobile",
        id="samsung-internet",
    ),
    pytest.param(
        "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
        "Firefox Mobile",
        "Android",
        "mobile",
        id="firefox-android-phone",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP1A.240405.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36",
        "Chrome Mobile WebView",
        "Android",
        "mobile",
        id="android-webview",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 10; CUBOT P30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Mobile Safari/537.36",
        "Chrome Mobile",
        "Android",
        "mobile",
        id="cubot-is-not-a-bot",
    ),
    pytest.param(
        "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/AP1A.240405.002)",
        "Android",
        "Android",
        "mobile",
        id="android-app-dalvik",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) AppleWebKit/537.36 (KHTML, like "
        "Gecko) Chrome/52.0.2743.116 Mobile Safari/537.36 Edge/15.15063",
        "Edge Mobile",
        "Windows Phone",
        "mobile",
        id="windows-phone",
    ),
    pytest.param(
        "Mozilla/5.0 (Mobile; rv:48.0; Nokia_8110_4G) Gecko/48.0 Firefox/48.0 KAIOS/2.5",
        "Firefox Mobile",
        "KaiOS",
        "mobile",
        id="kaios-feature-phone",
    ),
    # -- tablet -----------------------------------------------------------------------------------------------
    pytest.param(
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
        "Mobile/15E148 Safari/604.1",
        "Mobile Safari",
        "iOS",
        "tablet",
        id="ipad-safari",
    ),
    pytest.param(
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "CriOS/124.0.6367.111 Mobile/15E148 Safari/604.1",
        "Chrome Mobile iOS",
        "iOS",
        "tablet",
        id="ipad-chrome",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Safari/537.36",
        "Chrome",
        "Android",
        "tablet",
        id="galaxy-tab-s8",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 11; SM-T870) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.0.0 "
        "Safari/537.36",
        "Chrome",
        "Android",
        "tablet",
        id="galaxy-tab-s7",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 14; Pixel Tablet) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Safari/537.36",
        "Chrome",
        "Android",
        "tablet",
        id="pixel-tablet",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 12; Lenovo TB-J606F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Safari/537.36",
        "Chrome",
        "Android",
        "tablet",
        id="lenovo-tab",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 9; KFMAWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/124.2.1 like "
        "Chrome/124.0.6367.118 Safari/537.36",
        "Amazon Silk",
        "Android",
        "tablet",
        id="kindle-fire-silk",
    ),
    pytest.param(
        "Mozilla/5.0 (Android 14; Tablet; rv:125.0) Gecko/125.0 Firefox/125.0",
        "Firefox Mobile",
        "Android",
        "tablet",
        id="firefox-android-tablet",
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; ARM; Trident/6.0; Touch)",
        "IE",
        "Windows",
        "tablet",
        id="surface-rt",
    ),
    # -- bots: crawlers and AI agents -------------------------------------------------------------------------
    pytest.param(
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; "
        "+http://www.google.com/bot.html) Chrome/124.0.6367.201 Safari/537.36",
        "Googlebot",
        "Other",
        "bot",
        id="googlebot-desktop",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.201 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Googlebot",
        "Android",
        "bot",
        id="googlebot-smartphone",
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "bingbot",
        "Other",
        "bot",
        id="bingbot",
    ),
    pytest.param(
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
        "GPTBot",
        "Other",
        "bot",
        id="gptbot",
    ),
    pytest.param(
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
        "ClaudeBot",
        "Other",
        "bot",
        id="claudebot",
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; Claude-User/1.0; +Claude-User@anthropic.com)",
        "Other",
        "Other",
        "bot",
        id="claude-user",
    ),
    pytest.param(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 "
        "Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
        "Applebot",
        "Mac OS X",
        "bot",
        id="applebot",
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", "YandexBot", "Other", "bot", id="yandex"
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
        "Baiduspider",
        "Other",
        "bot",
        id="baiduspider",
    ),
    pytest.param(
        "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", "DuckDuckBot", "Other", "bot", id="duckduckbot"
    ),
    pytest.param(
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "FacebookBot",
        "Other",
        "bot",
        id="facebookexternalhit",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36",
        "HeadlessChrome",
        "Linux",
        "bot",
        id="headless-chrome",
    ),
    # -- bots: HTTP libraries and API tools -------------------------------------------------------------------
    pytest.param("curl/8.5.0", "curl", "Other", "bot", id="curl"),
    pytest.param("Wget/1.21.4", "Wget", "Other", "bot", id="wget"),
    pytest.param("python-requests/2.32.3", "Python Requests", "Other", "bot", id="python-requests"),
    pytest.param("python-httpx/0.27.0", "Other", "Other", "bot", id="python-httpx"),
    pytest.param("Python/3.11 aiohttp/3.9.5", "Python aiohttp", "Other", "bot", id="aiohttp"),
    pytest.param("Python-urllib/3.11", "Python-urllib", "Other", "bot", id="python-urllib"),
    pytest.param("Go-http-client/2.0", "Go-http-client", "Other", "bot", id="go-http-client"),
    pytest.param("okhttp/4.12.0", "okhttp", "Other", "bot", id="okhttp"),
    pytest.param("Java/17.0.2", "Java", "Other", "bot", id="java"),
    pytest.param("Apache-HttpClient/4.5.14 (Java/17.0.2)", "Apache-HttpClient", "Other", "bot", id="apache-httpclient"),
    pytest.param("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "Other", "Other", "bot", id="node-fetch"),
    pytest.param("undici", "Other", "Other", "bot", id="undici"),
    pytest.param("node", "Other", "Other", "bot", id="node-fetch-builtin"),
    pytest.param("axios/1.7.2", "axios", "Other", "bot", id="axios"),
    pytest.param("PostmanRuntime/7.39.0", "PostmanRuntime", "Other", "bot", id="postman"),
    pytest.param("libwww-perl/6.72", "libwww-perl", "Other", "bot", id="libwww-perl"),
    # -- other ------------------------------------------------------------------------------------------------
    pytest.param(
        "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945.79 "
        "Safari/537.36 WebAppManager",
        "Chrome",
        "Web0S",
        "other",
        id="lg-smart-tv",
    ),
    pytest.param(
        "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        "Apple Mail",
        "Other",
        "other",
        id="playstation-5",
    ),
    pytest.param("Mozilla/5.0", "Other", "Other", "other", id="bare-mozilla"),
]


@pytest.fixture(scope="module")
def parser() -> UserAgentParser:
    return UserAgentParser()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


@pytest.mark.parametrize(("ua", "browser", "os", "device_class"), AGENTS)
def test_real_user_agents(parser: UserAgentParser, ua: str, browser: str, os: str, device_class: str) -> None:
    info = parser.parse(ua)
    assert info is not None
    assert (info.browser_family, info.os_family, info.device_class) == (browser, os, device_class)
    assert info.device_class in DEVICE_CLASSES


def test_table_is_big_enough() -> None:
    assert len(AGENTS) >= 40
    classes = {param.values[3] for param in AGENTS}
    assert classes == set(DEVICE_CLASSES)


def test_full_fields(parser: UserAgentParser) -> None:
    assert parser.parse(
        "Mozilla/5.0 (Linux; Android 14; Pixel 8 Pro) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.113 "
        "Mobile Safari/537.36"
    ) == UserAgentInfo(
        browser_family="Chrome Mobile",
        browser_version="124.0.6367.113",
        os_family="Android",
        os_version="14",
        device_family="Pixel 8 Pro",
        device_brand="Google",
        device_model="Pixel 8 Pro",
        device_class="mobile",
    )
    assert parser.parse(CHROME_WINDOWS) == UserAgentInfo(
        browser_family="Chrome",
        browser_version="124.0.0.0",
        os_family="Windows",
        os_version="10",
        device_family="Other",
        device_class="desktop",
    )


# Phones and tablets where `user_agents` (the old slow path) and our classifier should agree: a cross-check
# that our rules keep its sound parts. (They disagree, by design, on bots, HTTP libraries, Firefox's Android
# tablet token and Android app stacks; see the module docstring of enrich/useragent.py.)
CROSS_CHECK_IDS = {
    "iphone-safari",
    "iphone-chrome",
    "android-chrome-reduced-ua",
    "galaxy-s24-chrome",
    "pixel-8-pro-chrome",
    "samsung-internet",
    "firefox-android-phone",
    "android-webview",
    "windows-phone",
    "ipad-safari",
    "ipad-chrome",
    "galaxy-tab-s8",
    "galaxy-tab-s7",
    "kindle-fire-silk",
    "surface-rt",
    "chrome-windows",
    "safari-macos",
    "firefox-linux",
}


@pytest.mark.parametrize(
    ("ua", "device_class"), [pytest.param(p.values[0], p.values[3], id=p.id) for p in AGENTS if p.id in CROSS_CHECK_IDS]
)
def test_agrees_with_user_agents_package_on_devices(parser: UserAgentParser, ua: str, device_class: str) -> None:
    user_agents = pytest.importorskip("user_agents")
    reference = user_agents.parse(ua)
    theirs = (
        "tablet"
        if reference.is_tablet
        else "mobile"
        if reference.is_mobile
        else "desktop"
        if reference.is_pc
        else "other"
    )
    info = parser.parse(ua)
    assert info is not None
    assert info.device_class == theirs == device_class


def test_cross_check_ids_exist() -> None:
    assert {p.id for p in AGENTS} >= CROSS_CHECK_IDS


# -- hostile and odd input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ua", [None, "", "   ", b"", b"  "])
def test_nothing_to_parse_is_none(parser: UserAgentParser, ua: str | bytes | None) -> None:
    assert parser.parse(ua) is None


def test_non_strings_are_none(parser: UserAgentParser) -> None:
    assert parser.parse(42) is None  # type: ignore[arg-type]


def test_huge_user_agent_is_capped_before_parsing() -> None:
    parser = UserAgentParser(cache_size=16, warm_up=False)
    huge = CHROME_WINDOWS + " " + "A" * 100_000
    info = parser.parse(huge)
    assert info is not None
    assert info.browser_family == "Chrome"
    assert info == parser.parse(huge[:MAX_USER_AGENT_LENGTH])
    # Both calls shared one cache entry: the key is the capped string, not the 100 KB one.
    cache = parser.cache_info()
    assert cache is not None
    assert (cache.currsize, cache.hits) == (1, 1)
    assert parser.parse(huge.encode()) == info


def test_non_utf8_bytes_are_decoded_with_replacement(parser: UserAgentParser) -> None:
    raw = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko \xff\xfe\xc3) " + (
        b"Chrome/124.0.0.0 Safari/537.36"
    )
    info = parser.parse(raw)
    assert info is not None
    assert (info.browser_family, info.os_family, info.device_class) == ("Chrome", "Windows", "desktop")
    latin1 = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Gecko/20100101 Firefox/125.0 Österreich".encode("latin-1")
    latin1_info = parser.parse(latin1)
    assert latin1_info is not None
    assert latin1_info.browser_family == "Firefox"


def test_utf8_bytes_equal_str(parser: UserAgentParser) -> None:
    assert parser.parse(CHROME_WINDOWS.encode()) == parser.parse(CHROME_WINDOWS)


def test_control_characters_do_not_break_parsing(parser: UserAgentParser) -> None:
    info = parser.parse("curl/8.5.0\x00\r\n\t")
    assert info is not None
    assert info.device_class == "bot"


# -- cache, warm-up, singleton ----------------------------------------------------------------------------------


def test_cache_bound_is_respected() -> None:
    parser = UserAgentParser(cache_size=8, warm_up=False)
    for i in range(50):
        parser.parse(f"{CHROME_WINDOWS} build/{i}")
    cache = parser.cache_info()
    assert cache is not None
    assert cache.currsize == 8
    assert cache.maxsize == 8
    parser.parse(f"{CHROME_WINDOWS} build/49")
    after = parser.cache_info()
    assert after is not None
    assert after.hits == 1
    parser.clear_cache()
    cleared = parser.cache_info()
    assert cleared is not None
    assert cleared.currsize == 0


def test_uncached_parse_matches_cached(parser: UserAgentParser) -> None:
    for param in AGENTS[:10]:
        ua = param.values[0]
        assert isinstance(ua, str)
        assert parser.parse_uncached(ua) == parser.parse(ua)


def test_warm_up_bypasses_the_cache() -> None:
    parser = UserAgentParser(warm_up=False)
    elapsed = parser.warm_up()
    assert elapsed > 0
    cache = parser.cache_info()
    assert cache is not None
    assert cache.currsize == 0
    assert parser.warm_up(["curl/8.5.0"]) >= 0


def test_constructor_warms_up(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = UserAgentParser.warm_up

    def counting(self: UserAgentParser, *args: object) -> float:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(UserAgentParser, "warm_up", counting)
    UserAgentParser()
    UserAgentParser(warm_up=False)
    assert calls == [1]


def test_fast_resolver_is_used(parser: UserAgentParser) -> None:
    assert parser.enabled
    assert parser.fast  # ua-parser-rs is installed in the project's environment


def test_default_parser_is_a_singleton() -> None:
    assert default_parser() is default_parser()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"device_family": "Spider", "os_family": "Android"}, "bot", id="spider-wins"),
        pytest.param({"device_family": "iPad", "os_family": "iOS"}, "tablet", id="ipad-family"),
        pytest.param({"device_brand": "Generic_Android_Tablet", "os_family": "Android"}, "tablet", id="tablet-brand"),
        pytest.param({"os_family": "iOS"}, "mobile", id="ios"),
        pytest.param({"os_family": "Windows"}, "desktop", id="windows"),
        pytest.param({"os_family": "Windows", "os_major": "RT"}, "tablet", id="windows-rt"),
        pytest.param({}, "other", id="nothing-known"),
    ],
)
def test_classify_device_from_families(kwargs: dict[str, str], expected: str) -> None:
    assert classify_device("Mozilla/5.0", **kwargs) == expected


@pytest.mark.parametrize(("ua", "device_class"), [pytest.param(p.values[0], p.values[3], id=p.id) for p in AGENTS])
def test_python_bot_matcher_agrees_with_rust(ua: str, device_class: str) -> None:
    # The Python fallback (no ua-parser-rs) must flag exactly what the Rust engine flags.
    rust, python = useragent_module._rust_bot_matcher(), useragent_module._python_bot_matcher()
    assert rust(ua) == python(ua)
    if device_class != "bot":
        assert not rust(ua)


def test_without_ua_parser_rs_same_answers_slower(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    # As if the ua-parser-rs wheel were missing: ua-parser is imported afresh and finds no Rust engine.
    for name in [m for m in sys.modules if m == "ua_parser" or m.startswith("ua_parser.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ua_parser_rs", None)
    slow = UserAgentParser(warm_up=False)
    assert slow.enabled
    assert not slow.fast
    assert len(_warnings(caplog)) == 1
    monkeypatch.undo()
    fast = UserAgentParser(warm_up=False)
    assert fast.fast
    for param in AGENTS:
        ua = param.values[0]
        assert isinstance(ua, str)
        slow_info, fast_info = slow.parse(ua), fast.parse(ua)
        assert slow_info is not None
        assert fast_info is not None
        # Device families may differ between ua-parser's engines (Applebot: "Mac" in Python's re, "Spider" in
        # Rust's); what we promise is the same browser, OS and device class.
        assert (slow_info.browser_family, slow_info.os_family, slow_info.device_class) == (
            fast_info.browser_family,
            fast_info.os_family,
            fast_info.device_class,
        ), param.id


# -- ua-parser missing, and the Enricher ------------------------------------------------------------------------


def test_missing_ua_parser_gives_none_and_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)

    def missing() -> None:
        raise ImportError("No module named 'ua_parser'")

    monkeypatch.setattr(useragent_module, "_load_resolver", missing)
    parser = UserAgentParser()
    assert not parser.enabled
    assert parser.cache_info() is None
    for _ in range(3):
        assert parser.parse(CHROME_WINDOWS) is None
    assert parser.parse_uncached(CHROME_WINDOWS) is None
    assert len(_warnings(caplog)) == 1
    assert Enricher(None, parser).enrich("81.2.69.160", CHROME_WINDOWS) == (None, None)


@pytest.fixture
def demo_locator(tmp_path: Path) -> Iterator[GeoLocator]:
    with GeoLocator(build_city_database(tmp_path / "City.mmdb", DEMO_CITIES), check_interval=None) as located:
        yield located


def test_enricher_combines_both(demo_locator: GeoLocator, parser: UserAgentParser) -> None:
    enricher = Enricher(demo_locator, parser)
    geo, agent = enricher.enrich("81.2.69.160", CHROME_WINDOWS)
    assert geo is not None
    assert geo.city == "London"
    assert agent is not None
    assert agent.device_class == "desktop"
    assert enricher.enrich(None, None) == (None, None)
    assert enricher.enrich("10.0.0.1", "") == (None, None)
    assert Enricher(None, None).enrich("81.2.69.160", CHROME_WINDOWS) == (None, None)


class _Exploding:
    def lookup(self, ip: str | None) -> None:
        raise RuntimeError("boom")

    def parse(self, ua: str | bytes | None) -> None:
        raise RuntimeError("bang")


def test_enricher_never_raises_and_warns_once_per_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    exploding = _Exploding()
    enricher = Enricher(exploding, exploding)  # type: ignore[arg-type]
    for _ in range(3):
        assert enricher.enrich("81.2.69.160", CHROME_WINDOWS) == (None, None)
    messages = [r.getMessage() for r in _warnings(caplog)]
    assert len(messages) == 2
    assert any("geo" in m for m in messages)
    assert any("user-agent" in m for m in messages)
