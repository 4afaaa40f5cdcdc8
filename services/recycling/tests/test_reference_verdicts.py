"""Every item verdict of shared/reference/item-verdicts.json, through search.

For each reference item: the Korean and the English name people would type find our item, and
its parts send it to the streams the reference gives (the part set, primary part first). A
wrong verdict in the data, or a synonym that takes the query to another stream, fails here.
"""

from __future__ import annotations

import pytest

from ecosort_recycling.knowledge_base import Item, read_knowledge_files
from ecosort_recycling.search import SearchIndex

KNOWLEDGE = read_knowledge_files()
INDEX = SearchIndex.from_knowledge(KNOWLEDGE)
ITEMS = {item.id: item for item in KNOWLEDGE.items}

# (Korean query, English query or None, our item, its streams: primary first, then the others)
VERDICTS: list[tuple[str, str | None, str, tuple[str, ...]]] = [
    # 종이류 (rules §1)
    ("신문지", "newspaper", "newspaper", ("paper",)),
    ("책", "books", "book", ("paper",)),
    ("노트", "notebooks", "notebook", ("paper",)),
    ("전단지", "flyers", "flyer", ("paper",)),
    ("골판지 상자", "corrugated box", "corrugated-box", ("paper",)),
    ("종이컵", "paper cup", "paper-cup", ("paper",)),
    ("영수증", "thermal receipt", "receipt", ("general",)),
    ("택배 송장", "shipping label", "waybill", ("general",)),
    ("인화지", "photo paper", "photo", ("general",)),
    ("종이호일", "baking paper", "baking-paper", ("general",)),
    ("방수 코팅 포스터", "waterproof paper", "laminated-paper", ("general",)),
    ("은박 보냉 종이상자", "foil-lined insulated paper box", "insulated-foil-box", ("general",)),
    ("사용한 화장지", "used tissue", "tissue", ("general",)),
    ("물티슈", "wet wipes", "wet-wipe", ("general",)),
    ("피자박스", "greasy pizza box", "pizza-box", ("paper", "general")),
    ("종이 컵라면 용기", "paper instant-noodle cup", "paper-noodle-cup", ("paper", "general")),
    # 종이팩 (§2): not paper
    ("우유팩", "milk carton", "milk-carton", ("paper_pack",)),
    ("두유 멸균팩", "aseptic carton", "aseptic-carton", ("paper_pack",)),
    # 유리병 (§3) and what is not a glass bottle
    ("주류 유리병", "glass beverage bottle", "glass-drink-bottle", ("glass_bottle",)),
    ("소주병", "deposit soju", "soju-bottle", ("glass_bottle",)),
    ("맥주병", "beer bottle", "beer-bottle", ("glass_bottle",)),
    ("깨진 유리", "broken glass", "broken-glass", ("nonburnable",)),
    ("내열유리", "heat-resistant glass", "heat-resistant-glass", ("nonburnable",)),
    ("와인잔", "wine glass", "crystal-glass", ("nonburnable", "general")),
    ("판유리", "sheet glass", "large-mirror", ("bulky", "nonburnable")),
    ("도자기", "ceramics", "ceramics", ("nonburnable",)),
    ("깨진 화분", None, "ceramics", ("nonburnable",)),
    # 캔류·고철 (§4, §5)
    ("음료캔", None, "beverage-can", ("can",)),
    ("통조림캔", "food can", "food-can", ("can",)),
    ("부탄가스", "butane", "butane-can", ("can",)),
    ("스프레이캔", "aerosol can", "aerosol-can", ("can",)),
    ("내용물 남은 페인트", "paint can", "paint-can", ("hazardous", "can")),
    ("알루미늄 호일", "aluminium foil", "aluminium-foil", ("general",)),
    ("은박 접시", "foil tray", "foil-tray", ("general",)),
    ("프라이팬", "frying pan", "frying-pan", ("scrap_metal", "general")),
    ("가위", "scissors", "scissors", ("scrap_metal",)),
    ("칼", "kitchen knife", "knife", ("general",)),
    ("우산", "umbrella", "umbrella", ("scrap_metal", "general")),
    ("철사", "nails", "wire-nails-tools", ("scrap_metal",)),
    # 페트·플라스틱 (§0b, §6, §7)
    ("투명 생수 페트병", "clear water PET bottle", "clear-pet-bottle", ("pet_clear",)),
    ("유색 페트병", "coloured PET bottle", "coloured-pet-bottle", ("plastic",)),
    ("워셔액 PET", "PET bottle for oil", "oil-pet-bottle", ("plastic",)),
    ("간장 PET", "soy sauce bottle", "oil-pet-bottle", ("plastic",)),
    ("투명 1회용 컵", "clear takeaway cup", "takeaway-cup", ("plastic",)),
    ("과일 트레이", "fruit clamshell", "fruit-clamshell", ("plastic",)),
    ("샴푸 용기", "shampoo", "shampoo-bottle", ("plastic", "scrap_metal")),
    ("세제 용기", "detergent bottle", "detergent-bottle", ("plastic",)),
    ("치약 튜브", "toothpaste tube", "toothpaste-tube", ("plastic", "plastic")),  # tube, PP cap
    ("도포·첩합 표시 제품", None, "laminated-marked-package", ("general",)),
    ("배달 플라스틱 용기", "takeaway container", "delivery-container", ("plastic", "general")),
    ("플라스틱 장난감", "non-electric plastic toy", "plastic-toy", ("plastic",)),
    ("봉제인형", "plush toy", "plush-toy", ("general",)),
    ("옷걸이", None, "plastic-hanger", ("general",)),
    ("세탁소 옷걸이", None, "wire-hanger", ("scrap_metal",)),
    ("칫솔", "toothbrush", "toothbrush", ("general",)),
    ("CD", "DVD", "cd-dvd", ("general",)),
    ("여행용 트렁크", "suitcase", "suitcase", ("bulky",)),
    ("유모차", "stroller", "stroller", ("bulky",)),
    ("빈 약통", "empty pill bottle", "pill-bottle", ("plastic",)),
    ("알약 포장재", "blister pack", "blister-pack", ("general",)),
    ("실리콘", "silicone", "silicone-kitchenware", ("general",)),
    # 비닐류 (§8)
    ("과자 봉지", "snack bag", "snack-bag", ("vinyl",)),
    ("라면 봉지", "noodle bag", "noodle-bag", ("vinyl",)),
    ("에어캡", "bubble wrap", "bubble-wrap", ("vinyl",)),
    ("페트병 비닐 라벨", "PET label", "pet-label", ("vinyl",)),
    ("깨끗한 랩", "clean PE cling film", "cling-film", ("vinyl", "general")),
    ("고무장갑", "rubber gloves", "rubber-gloves", ("general",)),
    ("식탁보", "tablecloth", "tablecloth", ("general",)),
    ("장판", "vinyl flooring", "vinyl-flooring", ("bulky", "general")),
    ("돗자리", None, "picnic-mat", ("general", "bulky")),
    # 스티로폼 (§9): tape and stickers come off, the box stays styrofoam; coated EPS does not
    ("흰색 스티로폼 완충재", "white EPS packaging", "styrofoam-cushion", ("styrofoam",)),
    ("농수산 상자", "EPS box", "styrofoam-box", ("styrofoam",)),
    ("테이프 붙은 스티로폼", None, "styrofoam-box", ("styrofoam",)),
    ("스티커 붙은 스티로폼", None, "styrofoam-box", ("styrofoam",)),
    ("송장 붙은 스티로폼", None, "styrofoam-box", ("styrofoam",)),
    ("타재질 접착 스티로폼", "coated EPS", "coated-eps", ("general",)),
    ("코팅된 스티로폼", "laminated EPS", "coated-eps", ("general",)),
    ("건축용 단열 스티로폼", "construction insulation EPS", "insulation-eps", ("bulky",)),
    ("과일 포장 그물망", "foam fruit net", "fruit-net", ("general",)),
    # 의류 (§10)
    ("입을 수 있는 의류", "wearable clothes", "clothes", ("textile",)),
    ("신발", "paired shoes", "shoes", ("textile",)),
    ("이불", "duvet", "blanket", ("bulky", "general")),
    ("방석", "cushion", "pillow", ("general",)),
    ("롱부츠", "boots", "boots-skates", ("general",)),
    ("바퀴 달린 가방", "wheeled bags", "suitcase", ("bulky",)),
    ("젖거나 곰팡이 핀 옷", "wet/mouldy clothes", "wet-clothes", ("general",)),
    # 전지·조명·가전 (§11–§13)
    ("건전지", "primary batteries", "aa-battery", ("battery",)),
    ("보조배터리", "power bank", "power-bank", ("battery",)),
    ("리튬이온 배터리", "Li-ion", "li-ion-battery", ("battery",)),
    ("형광등", "fluorescent tube", "fluorescent-tube", ("lamp",)),
    ("직관형 LED", "tube LED", "led-bulb", ("lamp",)),
    ("깨진 형광등", "broken lamp", "broken-lamp", ("nonburnable",)),
    ("평판형 LED 조명기구", "flat LED fixture", "flat-led", ("nonburnable", "bulky")),
    ("드라이어", "hair dryer", "hair-dryer", ("small_appliance",)),
    ("전기밥솥", "rice cooker", "rice-cooker", ("small_appliance",)),
    ("청소기", "vacuum cleaner", "vacuum", ("small_appliance",)),
    ("휴대폰", "mobile phone", "mobile-phone", ("small_appliance",)),
    ("냉장고", "refrigerator", "refrigerator", ("large_appliance",)),
    ("세탁기", "washing machine", "washing-machine", ("large_appliance",)),
    ("에어컨", "air conditioner", "air-conditioner", ("large_appliance",)),
    ("전자레인지", "microwave", "microwave", ("large_appliance",)),
    ("제습기", "dehumidifier", "dehumidifier", ("large_appliance",)),
    ("공기청정기", None, "dehumidifier", ("large_appliance",)),
    # 폐의약품 (§14)
    ("알약", "pills", "pills", ("medicine",)),
    ("가루약", "capsules", "pills", ("medicine",)),
    ("물약", "liquid medicine", "liquid-medicine", ("medicine",)),
    ("안약", "eye drops", "ointment", ("medicine",)),
    # 음식물 vs 일반 (§15)
    ("닭뼈", "animal bones", "chicken-bone", ("general",)),
    ("생선가시", "fish bones", "fish-bone", ("general",)),
    ("조개 껍데기", "shellfish", "shellfish-shell", ("general",)),
    ("새우 껍데기", None, "crab-shell", ("general",)),
    ("메추리알 껍데기", "egg shells", "egg-shell", ("general",)),
    ("복숭아 씨", "hard fruit stones", "hard-fruit-stone", ("general",)),
    ("단단한 씨", "peach pit", "hard-fruit-stone", ("general",)),
    ("땅콩 껍데기", "nut shells", "nut-shell", ("general",)),
    ("코코넛 껍질", "hard rinds", "hard-rind", ("general",)),
    ("티백", "tea bags", "tea-bag", ("general",)),
    ("녹차잎", None, "tea-bag", ("general",)),
    ("커피찌꺼기", "coffee grounds", "coffee-grounds", ("general",)),
    ("한약 찌꺼기", "herbal dregs", "herbal-dregs", ("general",)),
    ("마늘 껍질", "garlic skins", "onion-skin", ("general",)),
    ("귤껍질", None, "citrus-peel", ("food",)),
    ("바나나껍질", "banana peel", "banana-peel", ("food",)),
    ("수박껍질", "watermelon rind", "watermelon-rind", ("food",)),
    ("남은 밥", "leftover food", "leftover-food", ("food",)),
    # 폐식용유, 아이스팩, 대형폐기물 (§18, §19, §17)
    ("폐식용유", "used cooking oil", "cooking-oil", ("cooking_oil",)),
    ("젤 아이스팩", "gel ice pack", "ice-pack", ("general", "vinyl")),
    ("가구", "furniture", "furniture", ("bulky",)),
    ("매트리스", "mattress", "mattress", ("bulky",)),
]


def _top(query: str) -> Item:
    hits = INDEX.search(query, limit=1)
    assert hits, f"{query!r} finds nothing"
    return hits[0].item


@pytest.mark.parametrize(("ko", "en", "item_id", "streams"), VERDICTS)
def test_reference_item_is_found_with_its_verdict(
    ko: str, en: str | None, item_id: str, streams: tuple[str, ...]
) -> None:
    assert [part.category for part in ITEMS[item_id].parts] == list(streams)
    for query in (ko, en):
        if query is not None:
            assert _top(query).id == item_id, query


def test_styrofoam_with_tape_or_stickers_is_styrofoam_once_they_are_off() -> None:
    # rules §9 Prepare: remove tape, labels, shipping stickers and film. Only EPS coated or
    # laminated with another material is 종량제.
    for item in KNOWLEDGE.items:
        names = (item.name_ko, *item.synonyms)
        if any(word in name for name in names for word in ("스티커", "테이프", "송장")) and any(
            "스티로폼" in name for name in names
        ):
            assert item.parts[0].category == "styrofoam", item.id
    box = ITEMS["styrofoam-box"].parts[0].note or ""
    assert "떼" in box and "스티커" in box


def test_a_frying_pan_with_fixed_non_metal_parts_goes_to_the_bag() -> None:
    # item-verdicts 프라이팬: "if lots of non-metal attached and not separable → 종량제" (S4).
    pan = ITEMS["frying-pan"]
    assert [part.category for part in pan.parts] == ["scrap_metal", "general"]
    assert "종량제봉투" in (pan.parts[1].note or "")


def test_all_metal_scissors_are_scrap_metal_with_the_blades_wrapped() -> None:
    # item-verdicts 가위(금속 단일): recycle:고철, prep "wrap blades" (S4).
    note = ITEMS["scissors"].parts[0].note or ""
    assert ITEMS["scissors"].parts[0].category == "scrap_metal" and "감싸" in note


def test_deposit_bottles_say_where_the_deposit_comes_back() -> None:
    # item-verdicts: return to any retailer selling it (100원 / 130원 since 2017-01-01) (S10).
    for item_id, amount in (("soju-bottle", "100원"), ("beer-bottle", "130원")):
        note = ITEMS[item_id].parts[0].note or ""
        assert "판매점" in note and amount in note
        assert "S10" in ITEMS[item_id].src
