"""Write datasets/pii/cases.jsonl: the labeled personal-data masking set (written by us).

Each line: ``{"id", "text", "pii": [{"type", "text"}], "keep": [...]}``. ``pii`` lists the
exact substrings that must be masked (in order of appearance), ``keep`` substrings that must
survive masking untouched (product names, order numbers, SKUs, prices). Messages are built
from hand-written templates and component lists with a fixed seed, plus hand-written cases
at the end; numbers are synthetic (IDs and cards carry valid check digits). Re-run after
editing: ``python bench/make_pii_cases.py``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "datasets" / "pii" / "cases.jsonl"
rng = random.Random(20261201)

CN_NUM = "零一二三四五六七八九"


def cn_number(n: int) -> str:
    if n < 10:
        return CN_NUM[n]
    if n < 20:
        return "十" + (CN_NUM[n % 10] if n % 10 else "")
    if n < 100:
        return CN_NUM[n // 10] + "十" + (CN_NUM[n % 10] if n % 10 else "")
    return str(n)


ADMIN = [
    "北京市朝阳区", "上海市浦东新区", "广东省深圳市南山区", "浙江省杭州市西湖区", "四川省成都市武侯区",
    "湖北省武汉市洪山区", "江苏省南京市鼓楼区", "河南省郑州市金水区", "内蒙古自治区呼和浩特市赛罕区",
    "广西壮族自治区南宁市青秀区", "山东省青岛市市南区", "福建省厦门市思明区", "陕西省西安市雁塔区",
    "重庆市渝中区", "天津市和平区", "辽宁省沈阳市和平区", "湖南省长沙市岳麓区", "云南省昆明市五华区",
    "黑龙江省哈尔滨市南岗区", "河北省石家庄市长安区", "安徽省合肥市蜀山区", "江西省南昌市东湖区",
    "贵州省贵阳市云岩区", "新疆维吾尔自治区乌鲁木齐市天山区", "浙江省金华市义乌市稠城街道",
    "江苏省苏州市昆山市花桥镇", "广东省广州市天河区", "深圳市宝安区", "杭州市余杭区", "成都市高新区",
    "武汉市江汉区", "南京市江宁区", "苏州工业园区", "海淀区", "朝阳区", "浦东新区", "福田区", "西城区",
]
ROADS = [
    "建国路", "人民南路", "中山北路", "长安街", "解放大道", "南京西路", "淮海中路", "文一西路", "天府大道",
    "深南大道", "珞喻路", "五一路", "八一大道", "延安西路", "学院路", "香港中路", "东风路", "科苑路",
    "中关村大街", "张江路", "滨江大道", "和平路", "新华街", "花园路", "金融街", "幸福里", "光明巷", "南锣鼓巷",
]
SECTIONS = ["二段", "三段", "一段", "2段", "东段", "西段", "四段"]
COMMUNITIES = [
    "幸福小区", "阳光花园", "万科城市花园", "碧桂园", "翠苑一区", "SOHO现代城", "国贸大厦", "万达广场",
    "龙湖天街", "保利香槟国际", "融创壹号院", "华润二十四城", "金地格林小镇", "恒大绿洲", "绿地中心",
    "世纪公寓", "紫荆公寓", "东方明珠花园", "新华家园", "盛世华庭", "丽都花园", "锦绣江南", "天通苑",
    "回龙观新村", "望京SOHO", "中海国际社区", "星河湾", "山水华府", "滨江一号", "阳光100",
]
BUILDINGS = ["3栋", "5号楼", "12幢", "A座", "B2栋", "七号楼", "东区3号楼", "2号楼", "18栋", "C座", "9幢", "三栋"]
UNITS = ["2单元", "一单元", "3单元", "1单元", "五单元"]
ROOMS = ["502", "1201室", "302房", "1803", "601室", "2202", "101", "1506室", "403"]
VILLAGES = [
    "河南省周口市郸城县汲冢镇王楼村", "四川省南充市仪陇县新政镇白鹤村", "安徽省阜阳市临泉县杨桥镇李庄村",
    "山东省临沂市兰陵县向城镇东沟村", "湖南省邵阳市隆回县桃洪镇石门村", "江西省赣州市于都县罗坳镇",
    "张庄村", "河北省邢台市威县贺营镇北关村", "贵州省遵义市湄潭县永兴镇", "云南省曲靖市会泽县娜姑镇白雾村",
]

SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
COMPOUND = ["欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "司徒", "夏侯", "令狐", "端木", "南宫"]
GIVEN1 = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超霞平刚桂英华玲鹏飞鑫宇浩晨婷雪琳颖")
GIVEN2 = ["小明", "建国", "秀英", "婷婷", "子涵", "浩然", "欣怡", "志强", "海燕", "桂兰", "一鸣", "雨桐",
          "俊杰", "文博", "思远", "晓东", "丽华", "国庆", "春生", "红梅", "宏伟", "嘉怡", "明轩", "佳琪"]

COMPLAINTS = [
    "麦克风有电流声，直播时观众都说有杂音", "补光灯用了两天就不亮了", "采集卡插上就冒烟了", "声卡没有声音输出",
    "摄像头画面一直卡顿", "收到的货外包装破损", "客服一直不回消息", "说好的赠品没有给", "退款申请了一周还没到账",
    "直播间说是正品，收到像是假货", "三脚架的螺丝滑丝了", "耳返有很大的底噪", "快递三天了还没发出",
    "屏幕有亮点，要求换货", "充电宝充不进电",
]
PRODUCTS = ["罗技C920", "iPhone 15 Pro", "罗德Wireless GO II", "Sony A7M4", "得胜PC-K600", "艾肯4nano",
            "神牛SL60W", "大疆Pocket 3", "华为Mate 60", "小米13", "MV7+麦克风", "雷蛇Kiyo Pro", "绿联采集卡CM410",
            "YAMAHA AG03", "Elgato HD60 X", "森海塞尔MKE600"]


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def card() -> str:
    prefix = rng.choice(["6222", "6217", "6228", "6214", "4367", "5187", "6259"])
    length = rng.choice([16, 19])
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - 1 - len(prefix)))
    number = body + luhn_digit(body)
    style = rng.random()
    if style < 0.35:
        return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    if style < 0.45:
        return "-".join(number[i : i + 4] for i in range(0, len(number), 4))
    return number


W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_number() -> str:
    while True:
        area = rng.choice(["110105", "310104", "440305", "330106", "510107", "420111", "320106", "410105", "610113"])
        birth = f"{rng.randint(1955, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        seq = f"{rng.randint(0, 999):03d}"
        body = area + birth + seq
        check = "10X98765432"[sum(int(d) * w for d, w in zip(body, W)) % 11]
        if rng.random() < 0.3 and check != "X":
            continue  # more X than chance
        number = body + check
        return number.lower() if check == "X" and rng.random() < 0.3 else number


def mobile() -> str:
    n = rng.choice(["13", "15", "18", "17", "19", "16"]) + "".join(rng.choice("0123456789") for _ in range(9))
    style = rng.randrange(7)
    return [
        n, n, f"{n[:3]}-{n[3:7]}-{n[7:]}", f"{n[:3]} {n[3:7]} {n[7:]}", f"+86 {n}", f"+86-{n[:3]}-{n[3:7]}-{n[7:]}",
        f"86{n}",
    ][style]


def landline() -> str:
    area = rng.choice(["010", "021", "020", "0755", "0571", "028", "027", "025"])
    num = "".join(rng.choice("0123456789") for _ in range(8 if len(area) == 3 else rng.choice([7, 8])))
    num = str(rng.randint(2, 8)) + num[1:]
    style = rng.randrange(5)
    return [f"{area}-{num}", f"({area}){num}", f"{area} {num}", f"{area}-{num}-{rng.randint(100, 999)}", f"{area}{num}"][style]


def email() -> str:
    user = rng.choice(["zhangwei", "li.na", "wang_fang88", "chen-jie", "liuyang2020", str(rng.randint(10000, 999999999)), "xiaoming.w"])
    return f"{user}@{rng.choice(['qq.com', '163.com', '126.com', 'gmail.com', 'sina.com', 'outlook.com', 'foxmail.com', 'company.com.cn'])}"


def wechat() -> str:
    base = rng.choice(["zhang_san", "LiMing", "wxid_", "xiaomei", "abc", "tom", "live", "a"])
    # WeChat ids are 6-20 characters and start with a letter.
    return base + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789_-") for _ in range(rng.randint(max(1, 6 - len(base)), 10)))


def qq() -> str:
    return str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(rng.randint(5, 9)))


def order_number() -> str:
    return "2026" + "".join(rng.choice("0123456789") for _ in range(rng.choice([12, 14, 15])))


def num_house() -> str:
    n = rng.randint(1, 1500)
    r = rng.random()
    if r < 0.15:
        return cn_number(rng.randint(1, 99)) + "号"
    if r < 0.25:
        return f"{n}-{rng.randint(1, 9)}号"
    if r < 0.32:
        return f"{n}弄{rng.randint(1, 40)}号"
    if r < 0.38:
        return f"{n}号院"
    return f"{n}号"


def address() -> str:
    kind = rng.randrange(8)
    admin = rng.choice(ADMIN) if rng.random() < 0.75 else ""
    road = rng.choice(ROADS) + (rng.choice(SECTIONS) if rng.random() < 0.3 else "")
    bld = rng.choice(BUILDINGS)
    unit = rng.choice(UNITS) if rng.random() < 0.6 else ""
    room = rng.choice(ROOMS)
    if kind == 0:
        return f"{admin}{road}{num_house()}"
    if kind == 1:
        return f"{admin}{road}{num_house()}{rng.choice(COMMUNITIES)}{bld}{unit}{room}"
    if kind == 2:
        return f"{rng.choice(COMMUNITIES)}{bld}{unit}{room}"
    if kind == 3:
        return f"{admin}{rng.choice(COMMUNITIES)}{bld}{unit}{room}"
    if kind == 4:
        v = rng.choice(VILLAGES)
        if not v.endswith("村"):
            v += rng.choice(["大桥村", "新庄村", "石桥村"])
        group = rng.choice([f"{rng.randint(1, 12)}组", cn_number(rng.randint(1, 12)) + "组", f"{cn_number(rng.randint(1, 9))}组{rng.randint(1, 80)}号", ""])
        return v + group
    if kind == 5:
        return f"{rng.choice(COMMUNITIES)}{rng.randint(1, 30)}-{rng.randint(1, 6)}-{rng.randint(101, 2802)}"
    if kind == 6:
        return f"{admin}{road}{num_house()}{rng.randint(2, 30)}楼{room}"
    return f"{rng.choice(ADMIN)}{road}{num_house()}{rng.choice(COMMUNITIES)}{bld}{room}"


def full_name() -> str:
    sur = rng.choice(COMPOUND) if rng.random() < 0.12 else rng.choice(SURNAMES)
    given = rng.choice(GIVEN2) if rng.random() < 0.55 else rng.choice(GIVEN1)
    return sur + given


def surname() -> str:
    return rng.choice(COMPOUND) if rng.random() < 0.12 else rng.choice(SURNAMES)


cases: list[dict] = []


def add(text: str, pii: list[tuple[str, str]], keep: list[str] = ()) -> None:
    for _, sub in pii:
        assert sub in text, (sub, text)
    for k in keep:
        assert k in text, (k, text)
    cases.append({"id": f"pii-{len(cases) + 1:04d}", "text": text, "pii": [{"type": t, "text": s} for t, s in pii], "keep": list(keep)})


def complaint() -> str:
    return rng.choice(COMPLAINTS)


ADDRESS_T = [
    "{c}，麻烦换货寄到{a}", "收货地址：{a}", "{c}。地址是{a}，请上门取件", "请发到{a}，谢谢",
    "我住在{a}，{c}", "寄回地址 {a}", "换新的发{a}吧", "{c}，我家在{a}", "地址:{a} 尽快处理",
    "快递放{a}门口就行", "送货地址改成{a}", "{a}，{c}",
]
for _ in range(120):
    a = address()
    add(rng.choice(ADDRESS_T).format(a=a, c=complaint()), [("ADDRESS", a)])

NAME_T_FULL = ["我叫{n}，{c}", "收件人：{n}", "联系人{n}，{c}", "姓名：{n}", "{c}，收货人：{n}", "本人{n}，{c}",
               "{n}先生的订单，{c}", "我是{n}，上周买的", "寄件人 {n}", "麻烦联系{n}女士", "联系人：{n} {c}"]
NAME_T_SUR = ["我姓{s}，{c}", "{s}先生您好，{c}", "我是{s}女士，{c}", "{c}，找{s}师傅修过", "免贵姓{s}", "{s}小姐说会回电",
              "请{s}经理处理一下，{c}", "我姓{s}，叫我{s}先生就行"]
for _ in range(70):
    n = full_name()
    add(rng.choice(NAME_T_FULL).format(n=n, c=complaint()), [("NAME", n)])
for _ in range(40):
    s = surname()
    t = rng.choice(NAME_T_SUR)
    text = t.format(s=s, c=complaint())
    add(text, [("NAME", s)] * t.count("{s}"))

PHONE_T = ["我的手机{p}请回电", "电话 {p}", "{c}，打我电话{p}", "联系方式：{p}", "手机号{p}，{c}", "座机{p}", "有事打{p}找我"]
for _ in range(45):
    p = mobile() if rng.random() < 0.7 else landline()
    add(rng.choice(PHONE_T).format(p=p, c=complaint()), [("PHONE", p)])

for _ in range(25):
    i = id_number()
    add(rng.choice(["身份证号{i}，{c}", "我的身份证 {i}", "{c}，实名认证用的身份证是{i}", "身份证号码：{i}"]).format(i=i, c=complaint()), [("ID", i)])

for _ in range(25):
    k = card()
    add(rng.choice(["退款请打到银行卡{k}", "卡号 {k}，户名本人", "{c}，退到我的储蓄卡{k}", "信用卡：{k}", "退到这张卡 {k}"]).format(k=k, c=complaint()), [("BANKCARD", k)])

for _ in range(20):
    e = email()
    add(rng.choice(["邮箱 {e}", "发票发到{e}", "{c}，结果请发邮件到 {e}", "我的邮箱是{e}谢谢"]).format(e=e, c=complaint()), [("EMAIL", e)])

for _ in range(20):
    w = wechat()
    add(rng.choice(["微信号：{w}", "加我微信 {w}", "vx: {w}", "wx：{w}，{c}", "{c}，我V信{w}", "微信{w}，拉个群说"]).format(w=w, c=complaint()), [("WECHAT", w)])

for _ in range(20):
    q = qq()
    add(rng.choice(["QQ {q}", "qq号：{q}", "{c}，加我扣扣{q}", "我QQ是{q}", "Q号 {q}"]).format(q=q, c=complaint()), [("QQ", q)])

# Combined messages: several kinds in one, with things that must stay.
for _ in range(40):
    n, a, p, o, prod = full_name(), address(), mobile(), order_number(), rng.choice(PRODUCTS)
    t = rng.randrange(4)
    if t == 0:
        add(f"订单号 {o}，买的{prod}，{complaint()}。收件人{n}，电话{p}，地址{a}", [("NAME", n), ("PHONE", p), ("ADDRESS", a)], [o, prod])
    elif t == 1:
        add(f"{prod}坏了，订单编号：{o}，寄回{a}，{n} {p}", [("ADDRESS", a), ("NAME", n), ("PHONE", p)], [o, prod])
    elif t == 2:
        add(f"我叫{n}，{prod}一直没发货，单号{o}，电话{p}", [("NAME", n), ("PHONE", p)], [o, prod])
    else:
        add(f"{n}，{p}，{a}。{prod}要换货，订单{o}", [("NAME", n), ("PHONE", p), ("ADDRESS", a)], [o, prod])

# Only things that must stay: product names, order numbers, SKUs, prices, common words.
KEEP_T = [
    ("买的{p}用了三天就坏了，订单号{o}", lambda p, o: [p, o]), ("{p}价格¥1299，直播间说送支架没送", lambda p, o: [p, "¥1299"]),
    ("SKU：BX-2026-0088 的{p}缺货", lambda p, o: ["BX-2026-0088", p]), ("订单号：{o} 还没到", lambda p, o: [o]),
    ("快递单号 SF1234567890123 三天没动", lambda p, o: ["SF1234567890123"]), ("{p}和说明书不符，工单{o}", lambda p, o: [p, o]),
    ("不打12315了，{p}给我换个新的", lambda p, o: ["12315", p]), ("小区门口的快递柜取不出来{p}", lambda p, o: [p]),
    ("这条路上信号不好？{p}连不上wifi", lambda p, o: [p]), ("农村发货太慢了，{p}等了十天", lambda p, o: [p]),
    ("客服说周末处理，结果{p}还是没寄", lambda p, o: [p]), ("黄色那款{p}掉漆", lambda p, o: [p]),
    ("运单号 YT1234567890123，{p}还在路上", lambda p, o: ["YT1234567890123", p]), ("型号{p}，序列号SN20260188", lambda p, o: [p, "SN20260188"]),
    ("王者荣耀直播用的{p}有回音", lambda p, o: [p]), ("{o}这个订单的{p}申请退款", lambda p, o: [p, o]),
]
for _ in range(45):
    t, keeps = rng.choice(KEEP_T)
    p, o = rng.choice(PRODUCTS), order_number()
    add(t.format(p=p, o=o), [], keeps(p, o))

# Hand-written cases (the examples and harder forms).
HAND = [
    ("寄到北京市朝阳区建国路88号SOHO现代城5号楼1201室", [("ADDRESS", "北京市朝阳区建国路88号SOHO现代城5号楼1201室")], []),
    ("幸福小区3栋2单元502，放门口", [("ADDRESS", "幸福小区3栋2单元502")], []),
    ("成都市武侯区人民南路四段二十七号，收件人王小明", [("ADDRESS", "成都市武侯区人民南路四段二十七号"), ("NAME", "王小明")], []),
    ("我姓周，麦克风坏了", [("NAME", "周")], []),
    ("收件人：王小明，电话13812345678", [("NAME", "王小明"), ("PHONE", "13812345678")], []),
    ("地址：江苏省南京市玄武区中山路18号德基广场二期B座1808", [("ADDRESS", "江苏省南京市玄武区中山路18号德基广场二期B座1808")], []),
    ("我在上海市徐汇区漕溪北路三十八号", [("ADDRESS", "上海市徐汇区漕溪北路三十八号")], []),
    ("寄到河南省驻马店市上蔡县重阳街道前湾村五组", [("ADDRESS", "河南省驻马店市上蔡县重阳街道前湾村五组")], []),
    ("联系人欧阳娜娜，罗技C920没有声音", [("NAME", "欧阳娜娜")], ["罗技C920"]),
    ("诸葛先生下单的iPhone 15还没发", [("NAME", "诸葛")], ["iPhone 15"]),
    ("订单号 2026112012345678 的声卡没声音，我叫李建国", [("NAME", "李建国")], ["2026112012345678"]),
    ("电话：0755-86013388转8001，找陈经理", [("PHONE", "0755-86013388"), ("NAME", "陈")], []),
    ("微信同手机号 15912345678", [("PHONE", "15912345678")], []),
    ("vx：wxid_8k2m9q 加一下", [("WECHAT", "wxid_8k2m9q")], []),
    ("邮箱123456789@qq.com，QQ也是123456789", [("EMAIL", "123456789@qq.com"), ("QQ", "123456789")], []),
    ("身份证 11010519491231002X 已实名", [("ID", "11010519491231002X")], []),
    ("退款到招行卡 6214 8301 2345 6781", [("BANKCARD", "6214 8301 2345 6781")], []),
    ("杭州市西湖区文三路90号东部软件园1号楼3楼", [("ADDRESS", "杭州市西湖区文三路90号东部软件园1号楼3楼")], []),
    ("广州天河区体育西路103号维多利广场A塔2503", [("ADDRESS", "广州天河区体育西路103号维多利广场A塔2503")], []),
    ("送到清华大学紫荆公寓11号楼305", [("ADDRESS", "清华大学紫荆公寓11号楼305")], []),
    ("深圳市南山区科技园南区高新南七道18号", [("ADDRESS", "深圳市南山区科技园南区高新南七道18号")], []),
    ("台北市大安区忠孝东路四段216巷27弄5号", [("ADDRESS", "台北市大安区忠孝东路四段216巷27弄5号")], []),
    ("快递员张师傅说放驿站了", [("NAME", "张")], []),
    ("我是司马相如的老婆，帮他投诉", [("NAME", "司马相如")], []),
    ("麻烦转告刘女士，大疆Pocket 3的云台坏了", [("NAME", "刘")], ["大疆Pocket 3"]),
    ("华为Mate 60直播掉帧，订单号：2026110398765432109", [], ["华为Mate 60", "2026110398765432109"]),
    ("小米13的价格是3999元，比直播间贵", [], ["小米13", "3999元"]),
    ("张力不够的三脚架，罗德Wireless GO II也不稳", [], ["罗德Wireless GO II"]),
    ("金色款Sony A7M4有划痕，白色的没有", [], ["Sony A7M4"]),
    ("高兴得太早了，神牛SL60W一周就坏", [], ["神牛SL60W"]),
]
for text, pii, keep in HAND:
    add(text, pii, keep)

OUT.parent.mkdir(parents=True, exist_ok=True)
with OUT.open("w", encoding="utf-8") as fh:
    for c in cases:
        fh.write(json.dumps(c, ensure_ascii=False) + "\n")
print(f"{len(cases)} cases -> {OUT}")
