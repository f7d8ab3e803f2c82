"""The documented rules of ServiceParameters, each pinned at its boundary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.params import ImageRef, request_fields, service_parameters, validate_ref
from worker.urls import normalize_url
from worker.vendor import OSS_REGIONS, InvalidParameter, validate_info_type, validate_service

VENDOR = Path(__file__).resolve().parents[1] / "data" / "vendor"
BASE = "https://example.com/"


def url_of_length(length: int) -> str:
    return BASE + "a" * (length - len(BASE))


def raises(field: str) -> pytest.RaisesExc[InvalidParameter]:
    return pytest.raises(InvalidParameter, match=rf"^{field}: ")


# --- imageUrl -------------------------------------------------------------------------------


def test_vendor_example_url_passes_unchanged() -> None:
    url = "https://img.alicdn.com/tfs/TB1U4r9AeH2gK0jSZJnXXaT1FXa-2880-480.png"
    assert normalize_url(url) == url


def test_url_of_exactly_2048_characters_is_accepted() -> None:
    url = url_of_length(2048)
    assert normalize_url(url) == url


def test_url_of_2049_characters_is_rejected_with_its_length() -> None:
    with raises("imageUrl") as info:
        normalize_url(url_of_length(2049))
    assert info.value.field == "imageUrl"
    assert info.value.reason.startswith("longer than 2048 characters (2049)")
    assert "OSS" in info.value.reason


def test_url_limit_counts_characters_after_percent_encoding() -> None:
    # Each Chinese character is one character as typed and nine ("%E5%9B%BE") once encoded.
    fits = url_of_length(2039) + "图"
    assert len(normalize_url(fits)) == 2048
    too_long = url_of_length(2040) + "图"
    assert len(too_long) == 2041
    with raises("imageUrl") as info:
        normalize_url(too_long)
    assert "(2049)" in info.value.reason


def test_surrounding_whitespace_is_stripped() -> None:
    assert normalize_url("  \t https://example.com/a.png \n") == "https://example.com/a.png"


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/a b.png",
        "https://example.com/a\tb.png",
        "https://example.com/a\nb.png",
        "https://example.com/a\x00b.png",
        "https://example.com/a\x7fb.png",
        "https://example.com/a\u200bb.png",  # zero-width space
        "https://example.com/a\u3000b.png",  # ideographic space
    ],
)
def test_whitespace_or_control_characters_inside_are_rejected(url: str) -> None:
    with raises("imageUrl") as info:
        normalize_url(url)
    assert "position 21" in info.value.reason


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "mailto:someone@example.com",
    ],
)
def test_schemes_other_than_http_and_https_are_rejected(url: str) -> None:
    with raises("imageUrl") as info:
        normalize_url(url)
    assert "http" in info.value.reason


@pytest.mark.parametrize(
    "url",
    ["/images/a.png", "images/a.png", "//example.com/a.png", "example.com/a.png", "", "   "],
)
def test_relative_or_empty_urls_are_rejected(url: str) -> None:
    with raises("imageUrl"):
        normalize_url(url)


@pytest.mark.parametrize(
    "url",
    ["https:///a.png", "http:example.com/a.png", "https://user@/a.png", "https://:80/a.png"],
)
def test_urls_without_a_host_are_rejected(url: str) -> None:
    with raises("imageUrl"):
        normalize_url(url)


@pytest.mark.parametrize(
    "url",
    ["https://example.com:99999/a", "https://example.com:8o/a", "https://example.com:/a"],
)
def test_bad_ports_are_rejected(url: str) -> None:
    with raises("imageUrl") as info:
        normalize_url(url)
    assert "port" in info.value.reason


def test_scheme_and_host_are_lower_cased_and_port_kept() -> None:
    assert (
        normalize_url("HTTPS://Img.Example.COM:8443/A.PNG") == "https://img.example.com:8443/A.PNG"
    )


def test_userinfo_is_kept() -> None:
    url = "https://user:pass@example.com/a.png"
    assert normalize_url(url) == url


def test_non_ascii_path_and_query_are_percent_encoded_as_utf8_and_the_fragment_dropped() -> None:
    got = normalize_url("https://example.com/图片/猫.jpg?标签=猫&x=é#段")
    assert got == (
        "https://example.com/%E5%9B%BE%E7%89%87/%E7%8C%AB.jpg?%E6%A0%87%E7%AD%BE=%E7%8C%AB&x=%C3%A9"
    )
    assert got.isascii()


def test_existing_escapes_are_not_encoded_twice() -> None:
    url = "https://example.com/%E5%9B%BE.jpg?q=a%20b&sig=abc%2Bdef%3D"
    assert normalize_url(url) == url


def test_mixed_raw_and_escaped_non_ascii_encodes_only_the_raw_part() -> None:
    assert normalize_url("https://example.com/%E5%9B%BE/图") == (
        "https://example.com/%E5%9B%BE/%E5%9B%BE"
    )


def test_a_lone_percent_sign_is_encoded() -> None:
    assert normalize_url("https://example.com/100%.png?off=5%z") == (
        "https://example.com/100%25.png?off=5%25z"
    )


def test_ascii_characters_a_url_cannot_carry_are_encoded() -> None:
    assert normalize_url('https://example.com/a"<>\\^`{|}.png') == (
        "https://example.com/a%22%3C%3E%5C%5E%60%7B%7C%7D.png"
    )


def test_reserved_characters_of_signed_urls_are_left_alone() -> None:
    url = (
        "https://bucket.oss-cn-hangzhou.aliyuncs.com/a.png?OSSAccessKeyId=LTAI&Expires=1&"
        "Signature=ab/c+d=&x-oss-process=image/resize,w_100;a:b@c!$'()*[]~"
    )
    assert normalize_url(url) == url


def test_idn_host_is_punycoded() -> None:
    assert normalize_url("https://例子.中国/a.png") == "https://xn--fsqu00a.xn--fiqs8s/a.png"


def test_idn_host_with_ideographic_full_stop_is_punycoded() -> None:
    assert normalize_url("https://例子。中国/a.png") == "https://xn--fsqu00a.xn--fiqs8s/a.png"


def test_mixed_case_idn_host_is_punycoded_in_lower_case() -> None:
    assert normalize_url("https://Bücher.Example/a.png") == "https://xn--bcher-kva.example/a.png"


def test_normalized_url_never_carries_non_ascii() -> None:
    got = normalize_url("https://用户:密码@例子.中国:8080/路径?查询#片段")
    assert got.isascii()
    assert got.startswith(
        "https://%E7%94%A8%E6%88%B7:%E5%AF%86%E7%A0%81@xn--fsqu00a.xn--fiqs8s:8080/"
    )


def test_unencodable_idn_host_is_rejected() -> None:
    with raises("imageUrl") as info:
        normalize_url("https://" + "例" * 70 + ".com/a.png")
    assert "host" in info.value.reason


@pytest.mark.parametrize("host", ["exa mple.com", "exa%41mple.com", "a,b.com", "a*b.com"])
def test_hosts_with_impossible_characters_are_rejected(host: str) -> None:
    with pytest.raises(InvalidParameter):
        normalize_url(f"https://{host}/a.png")


def test_ipv6_hosts_are_accepted_and_bad_ones_rejected() -> None:
    assert normalize_url("http://[2001:DB8::1]:8080/a") == "http://[2001:db8::1]:8080/a"
    with raises("imageUrl"):
        normalize_url("http://[zz::1]/a")
    with raises("imageUrl"):
        normalize_url("http://[::1/a")


def test_normalize_url_is_idempotent() -> None:
    once = normalize_url("https://例子.中国/图 片.jpg".replace(" ", "%20"))
    assert normalize_url(once) == once


# --- the choice between imageUrl and OSS ------------------------------------------------------


def test_url_ref_has_kind_url_and_its_normalized_url_as_key() -> None:
    ref = validate_ref(image_url=" https://例子.中国/a.png ")
    assert ref.kind == "url"
    assert ref.key == "https://xn--fsqu00a.xn--fiqs8s/a.png"
    assert ref.image_url == ref.key


def test_oss_ref_key_names_region_bucket_and_object() -> None:
    ref = validate_ref(
        oss_bucket="my-bucket", oss_object="2022023/04/24/test.jpg", oss_region="cn-beijing"
    )
    assert ref.kind == "oss"
    assert ref.key == "oss://cn-beijing/my-bucket/2022023/04/24/test.jpg"
    assert ref.image_url is None


def test_same_url_written_two_ways_has_one_key() -> None:
    a = validate_ref(image_url="HTTPS://Example.com/图.png")
    b = validate_ref(image_url="https://example.com/%E5%9B%BE.png")
    assert a.key == b.key


def test_neither_url_nor_oss_is_rejected() -> None:
    with raises("imageUrl") as info:
        validate_ref(data_id="x")
    assert "ossBucketName" in info.value.reason


def test_empty_strings_count_as_not_given() -> None:
    with raises("imageUrl"):
        validate_ref(image_url="", oss_bucket="", oss_object="", oss_region="")


def test_url_and_oss_together_are_rejected() -> None:
    with raises("imageUrl") as info:
        validate_ref(image_url=BASE, oss_bucket="my-bucket")
    assert "not both" in info.value.reason


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"oss_object": "a.jpg", "oss_region": "cn-beijing"}, "ossBucketName"),
        ({"oss_bucket": "my-bucket", "oss_region": "cn-beijing"}, "ossObjectName"),
        ({"oss_bucket": "my-bucket", "oss_object": "a.jpg"}, "ossRegionId"),
        ({"oss_bucket": "my-bucket"}, "ossObjectName"),
        ({"oss_region": "cn-beijing"}, "ossBucketName"),
    ],
)
def test_partial_oss_triple_names_the_missing_field(given: dict[str, str], missing: str) -> None:
    with raises(missing) as info:
        validate_ref(**given)
    assert info.value.field == missing
    assert "missing" in info.value.reason


# --- OSS fields --------------------------------------------------------------------------------


def oss(**overrides: str) -> ImageRef:
    fields = {"oss_bucket": "my-bucket", "oss_object": "a.jpg", "oss_region": "cn-beijing"}
    fields.update(overrides)
    return validate_ref(**fields)


@pytest.mark.parametrize("bucket", ["abc", "a" * 63, "my-bucket-01", "0bucket9"])
def test_valid_bucket_names_are_accepted(bucket: str) -> None:
    assert oss(oss_bucket=bucket).oss_bucket == bucket


@pytest.mark.parametrize(
    "bucket",
    ["ab", "a" * 64, "-bucket", "bucket-", "My-Bucket", "bucket_01", "buck.et", "bücket"],
)
def test_invalid_bucket_names_are_rejected(bucket: str) -> None:
    with raises("ossBucketName") as info:
        oss(oss_bucket=bucket)
    assert "3 to 63" in info.value.reason


def test_object_name_is_kept_as_is_with_chinese_characters_and_spaces() -> None:
    name = "相册/2024 春节/全家 福.jpg"
    ref = oss(oss_object=name)
    assert ref.oss_object == name
    assert (
        json.loads(request_fields("baselineCheck_global", ref, "")["ServiceParameters"])[
            "ossObjectName"
        ]
        == name
    )


def test_object_name_of_1023_utf8_bytes_is_accepted() -> None:
    name = "图" * 341  # 1023 bytes
    assert oss(oss_object=name).oss_object == name


def test_object_name_of_1024_utf8_bytes_is_rejected() -> None:
    with raises("ossObjectName") as info:
        oss(oss_object="a" + "图" * 341)
    assert "1023 bytes" in info.value.reason
    assert "(1024)" in info.value.reason


@pytest.mark.parametrize("name", ["/a.jpg", "\\a.jpg"])
def test_object_name_with_leading_slash_is_rejected(name: str) -> None:
    with raises("ossObjectName"):
        oss(oss_object=name)


@pytest.mark.parametrize(
    "region",
    ["cn-hangzhou", "cn-beijing", "cn-hongkong", "ap-southeast-1", "us-east-1", "eu-central-1"],
)
def test_known_regions_are_accepted(region: str) -> None:
    assert oss(oss_region=region).oss_region == region


def test_region_list_holds_the_documented_ids() -> None:
    documented = {
        "cn-hangzhou", "cn-shanghai", "cn-beijing", "cn-shenzhen", "cn-qingdao", "cn-zhangjiakou",
        "cn-huhehaote", "cn-wulanchabu", "cn-chengdu", "cn-hongkong", "cn-heyuan", "cn-guangzhou",
        "cn-nanjing", "cn-fuzhou", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3",
        "ap-southeast-5", "ap-southeast-6", "ap-southeast-7", "ap-northeast-1", "ap-northeast-2",
        "ap-south-1", "us-east-1", "us-west-1", "eu-west-1", "eu-central-1", "me-east-1",
        "me-central-1", "sa-east-1",
    }  # fmt: skip
    assert documented <= OSS_REGIONS


@pytest.mark.parametrize(
    ("region", "hint"),
    [("oss-cn-beijing", "drop the 'oss-' prefix"), ("CN-Beijing", "lowercase"), ("mars-1", "")],
)
def test_unknown_region_is_rejected_with_a_hint(region: str, hint: str) -> None:
    with raises("ossRegionId") as info:
        oss(oss_region=region)
    assert hint in info.value.reason


# --- dataId and referer ------------------------------------------------------------------------


def test_data_id_of_64_characters_is_accepted() -> None:
    data_id = "A-z_0.9" + "x" * 57
    assert len(data_id) == 64
    assert validate_ref(image_url=BASE, data_id=data_id).data_id == data_id


def test_data_id_of_65_characters_is_rejected() -> None:
    with raises("dataId") as info:
        validate_ref(image_url=BASE, data_id="x" * 65)
    assert "(65)" in info.value.reason


@pytest.mark.parametrize("data_id", ["img123****", "a b", "a/b", "a:b", "图片", "a+b"])
def test_data_id_outside_the_allowed_alphabet_is_rejected(data_id: str) -> None:
    with raises("dataId") as info:
        validate_ref(image_url=BASE, data_id=data_id)
    assert "letters, digits" in info.value.reason


def test_empty_data_id_is_omitted() -> None:
    ref = validate_ref(image_url=BASE, data_id="", referer="")
    assert ref.data_id is None and ref.referer is None
    assert service_parameters(ref, "") == {"imageUrl": BASE}


def test_referer_of_256_characters_is_accepted() -> None:
    referer = "www.aliyun.com/" + "r" * 241
    assert len(referer) == 256
    assert validate_ref(image_url=BASE, referer=referer).referer == referer


def test_referer_of_257_characters_is_rejected() -> None:
    with raises("referer") as info:
        validate_ref(image_url=BASE, referer="r" * 257)
    assert "(257)" in info.value.reason


def test_referer_with_a_line_break_is_rejected() -> None:
    with raises("referer"):
        validate_ref(image_url=BASE, referer="a\r\nX-Evil: 1")


# --- infoType and Service ----------------------------------------------------------------------


def test_info_type_is_normalized() -> None:
    assert validate_info_type(" customImage , textInImage,,customImage ") == (
        "customImage,textInImage"
    )
    assert validate_info_type("customImage,textInImage,publicFigure,logoData") == (
        "customImage,textInImage,publicFigure,logoData"
    )


def test_empty_info_type_means_none_requested() -> None:
    assert validate_info_type("") == ""
    assert validate_info_type(" , ") == ""


def test_unknown_info_type_is_rejected_with_a_suggestion() -> None:
    with raises("infoType") as info:
        validate_info_type("customImage,TextInImage")
    assert "did you mean textInImage" in info.value.reason
    with raises("infoType"):
        validate_info_type("faceData")


@pytest.mark.parametrize("service", ["baselineCheck_global", "aigcDetector_global"])
def test_documented_services_are_accepted(service: str) -> None:
    assert validate_service(service) == service


@pytest.mark.parametrize("service", ["baselineCheck", "BaselineCheck_global", "", "imageAudit"])
def test_other_services_are_rejected(service: str) -> None:
    with raises("Service") as info:
        validate_service(service)
    assert "baselineCheck_global" in info.value.reason


def test_invalid_parameter_str_is_field_then_reason() -> None:
    exc = InvalidParameter("dataId", "too long")
    assert str(exc) == "dataId: too long"
    assert (exc.field, exc.reason) == ("dataId", "too long")
    assert isinstance(exc, ValueError)


# --- the request -------------------------------------------------------------------------------


def test_vendor_request_example_is_reproduced() -> None:
    example = json.loads((VENDOR / "request.json").read_text(encoding="utf-8"))
    given = example["ServiceParameters"]
    ref = validate_ref(image_url=given["imageUrl"], data_id=given["dataId"].replace("*", "0"))
    fields = request_fields(example["Service"], ref, "")
    assert fields["Service"] == "baselineCheck_global"
    assert json.loads(fields["ServiceParameters"]) == {
        "imageUrl": given["imageUrl"],
        "dataId": "img1230000",
    }


def test_request_fields_hold_a_compact_json_string_with_the_apis_key_names() -> None:
    ref = validate_ref(
        oss_bucket="my-bucket",
        oss_object="a b/图.jpg",
        oss_region="cn-beijing",
        data_id="img-1",
        referer="www.aliyun.com",
    )
    fields = request_fields("aigcDetector_global", ref, "textInImage,customImage")
    assert fields == {
        "Service": "aigcDetector_global",
        "ServiceParameters": '{"ossBucketName":"my-bucket","ossObjectName":"a b/图.jpg",'
        '"ossRegionId":"cn-beijing","dataId":"img-1","referer":"www.aliyun.com",'
        '"infoType":"textInImage,customImage"}',
    }


def test_service_and_info_type_are_checked_at_the_edge_and_sent_as_stored() -> None:
    """Checked once, where a job is opened; each call sends its row's values as they are."""
    with raises("Service"):
        validate_service("nope")
    with raises("infoType"):
        validate_info_type("nope")
    fields = request_fields("aigcDetector_global", validate_ref(image_url=BASE), "textInImage")
    assert fields["Service"] == "aigcDetector_global"
    assert json.loads(fields["ServiceParameters"])["infoType"] == "textInImage"
