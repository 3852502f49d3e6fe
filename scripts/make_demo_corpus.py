#!/usr/bin/env python3
"""Write the small Chinese demo corpus used by ``embedkit demo`` and the README.

Outputs (relative to the repository root):

* ``embedkit/data/demo_zh.jsonl``  - one JSON object a line:
  ``{"id": "<topic-slug>-<nnn>", "text": "...", "metadata": {"topic": "<中文>", ...}}``.
  The second member of each deliberate paraphrase pair carries
  ``metadata["paraphrase_of"] = "<id of the first member>"``.
* ``embedkit/data/demo_queries.txt`` - example queries (not in the corpus), one a line.

All sentences are hand-written for this project; a few are expanded from small
templates. Pure stdlib, no network, byte-for-byte deterministic output.
Run:  python scripts/make_demo_corpus.py
"""
from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS_PATH = ROOT / "embedkit" / "data" / "demo_zh.jsonl"
QUERIES_PATH = ROOT / "embedkit" / "data" / "demo_queries.txt"

# Each topic: slug, Chinese name, hand-written sentences, paraphrase pairs
# (first, second), templates ((pattern, {slot: values}) expanded as a product,
# every combination checked to read naturally), and example queries.
TOPICS = [
    {
        "slug": "bank",
        "name": "银行卡与信用卡",
        "hand": [
            "信用卡的账单日和还款日有什么区别",
            "信用卡逾期一天会影响征信吗",
            "银行卡被冻结了应该怎么解冻",
            "借记卡每天的转账限额是多少",
            "怎么开通手机银行",
            "信用卡只还最低还款额会产生利息吗",
            "银行卡丢了第一时间该做什么",
            "办理信用卡需要提供收入证明吗",
            "跨行转账一般多久能到账",
            "信用卡分期的手续费怎么算",
            "在境外刷卡会收取货币转换费吗",
            "我想注销一张不常用的信用卡",
            "银行卡密码连续输错三次被锁了怎么办",
            "工资卡可以绑定支付宝和微信吗",
            "信用卡积分可以兑换哪些礼品",
            "为什么我的信用卡申请没有通过",
            "储蓄卡的小额账户管理费能免除吗",
            "收到短信说我的卡被盗刷了，是不是诈骗",
            "信用卡取现的利息是按天计算的吗",
            "外地办的银行卡能在本地网点办业务吗",
        ],
        "pairs": [
            ("信用卡怎么提高额度", "如何提升信用卡的额度"),
            ("银行卡换了手机号怎么修改预留号码", "银行卡预留的手机号码该如何更改"),
        ],
        "templates": [
            ("怎么在手机银行上查询{x}",
             {"x": ["账户余额", "近三个月的交易明细", "信用卡本期账单", "剩余可用额度"]}),
            ("{x}必须本人去柜台办理吗", {"x": ["挂失补卡", "重置密码"]}),
        ],
        "queries": [
            "信用卡额度太低能调高吗",
            "银行卡忘记密码了怎么重置",
            "转账到别的银行要等多久",
            "信用卡晚还了几天有影响吗",
        ],
    },
    {
        "slug": "express",
        "name": "快递物流",
        "hand": [
            "快递显示已签收但我没有收到怎么办",
            "寄快递需要出示身份证吗",
            "快递一般几天能送到",
            "物流信息三天没有更新是怎么回事",
            "可以让快递员把包裹放到驿站吗",
            "易碎物品寄快递要怎么包装",
            "寄生鲜走冷链快递运费贵不贵",
            "国际快递清关需要多长时间",
            "包裹在运输途中损坏了谁来赔偿",
            "快递单号查不到任何信息",
            "能不能修改已经发出的快递收货地址",
            "到付件如果拒收了运费谁出",
            "快递柜里的包裹超时会收保管费吗",
            "节假日期间快递还正常派送吗",
            "寄大件行李选哪种物流比较划算",
            "快递被别人冒领了应该找谁",
            "为什么我的快递一直停在中转站",
            "偏远地区能送货上门吗",
            "预约上门取件需要额外付费吗",
            "贵重物品寄快递建议保价吗",
        ],
        "pairs": [
            ("快递丢件了怎么索赔", "包裹丢失以后如何申请赔偿"),
            ("怎么查询我的快递到哪了", "如何查看包裹现在的物流位置"),
        ],
        "templates": [
            ("寄{x}到{y}大概需要几天",
             {"x": ["一份文件", "一箱水果"], "y": ["北京", "广州", "乌鲁木齐"]}),
        ],
        "queries": [
            "我的包裹到哪里了",
            "快递丢了能赔多少钱",
            "寄一个箱子到外省要几天",
        ],
    },
    {
        "slug": "digital",
        "name": "手机与数码",
        "hand": [
            "手机电池掉电特别快是什么原因",
            "新手机需要先充满电再用吗",
            "手机存储空间满了怎么清理",
            "换新手机怎么把聊天记录迁移过去",
            "蓝牙耳机连不上手机怎么办",
            "手机进水了第一时间该怎么处理",
            "笔记本电脑开机特别慢怎么解决",
            "平板电脑适合给孩子上网课用吗",
            "手机屏幕碎了换一块要多少钱",
            "路由器信号弱可以加一个中继器吗",
            "旧手机卖掉之前要怎么清除数据",
            "经常用快充会不会伤电池",
            "智能手表测的血压准吗",
            "电脑突然蓝屏重启是硬件坏了吗",
            "手机系统要不要及时升级",
            "买手机是选大内存还是大电池",
            "家里的网速突然变慢了怎么排查",
            "忘记了手机锁屏密码怎么办",
            "相机拍夜景总是模糊该怎么调",
            "玩游戏时手机发烫严重正常吗",
        ],
        "pairs": [
            ("手机怎么截长图", "如何在手机上截取滚动长截图"),
            ("电脑连不上无线网络怎么办", "笔记本电脑无法连接WiFi该如何解决"),
        ],
        "templates": [
            ("{x}的保修期一般是多久", {"x": ["手机", "笔记本电脑", "平板电脑", "蓝牙耳机"]}),
            ("怎么给{x}恢复出厂设置", {"x": ["安卓手机", "苹果手机", "无线路由器"]}),
        ],
        "queries": [
            "手机充电很慢怎么办",
            "怎么把旧手机的照片导到新手机",
            "家里WiFi老是断线",
        ],
    },
    {
        "slug": "weather",
        "name": "天气",
        "hand": [
            "明天会下雨吗",
            "这周末适合出去露营吗",
            "今天的空气质量怎么样",
            "台风什么时候登陆",
            "最近气温忽冷忽热应该怎么穿衣服",
            "下周会不会降温",
            "今天紫外线强不强，需要涂防晒吗",
            "雾霾天出门要戴什么口罩",
            "今年的梅雨季什么时候开始",
            "暴雨预警分为哪几个颜色等级",
            "为什么天气预报说有雨结果一直是晴天",
            "今天晚上能看到星星吗",
            "北方什么时候开始下第一场雪",
            "高温天气在户外工作要注意什么",
            "沙尘暴来了家里窗户要关紧吗",
            "打雷下雨的时候能不能在树下避雨",
            "冬天室内湿度多少比较合适",
            "今天风大不大，适合放风筝吗",
            "明天早上会有大雾吗，高速会不会封路",
            "昼夜温差大是什么原因造成的",
        ],
        "pairs": [
            ("今天需要带伞吗", "今天出门要不要带雨伞"),
            ("明天最高气温多少度", "明天白天最热的时候有多少度"),
        ],
        "templates": [
            ("{city}{time}的天气怎么样",
             {"city": ["上海", "成都", "哈尔滨"], "time": ["今天", "这个周末"]}),
        ],
        "queries": [
            "明天要不要带伞",
            "这几天会不会很冷",
            "周末出游天气好吗",
            "今天适合晾衣服吗",
        ],
    },
    {
        "slug": "food",
        "name": "美食与餐厅",
        "hand": [
            "附近有什么好吃的火锅店",
            "这家餐厅需要提前预约吗",
            "吃素的人有什么推荐的菜",
            "外卖送到的时候饭菜都凉了怎么办",
            "餐厅可以自带酒水吗",
            "有没有适合带小孩去的餐厅",
            "红烧肉怎么做才不油腻",
            "包饺子的面怎么和才有劲道",
            "这道菜辣不辣，能做成微辣吗",
            "餐厅有包间吗，能坐十个人",
            "团购券周末可以使用吗",
            "点的外卖少送了一份怎么处理",
            "减肥期间晚饭吃什么比较好",
            "蒸鱼要蒸几分钟才刚好熟",
            "奶茶可以去冰少糖吗",
            "有没有营业到深夜的烧烤店",
            "对海鲜过敏点菜时要注意什么",
            "家里来客人做几个什么菜比较好",
            "米饭煮得太硬了怎么补救",
            "餐厅的发票可以开公司抬头吗",
        ],
        "pairs": [
            ("哪里有好吃的川菜馆", "推荐一家味道正宗的四川菜馆"),
            ("西红柿炒鸡蛋怎么做", "番茄炒蛋的家常做法"),
        ],
        "templates": [
            ("{x}有什么简单快手的做法", {"x": ["早餐", "午餐便当", "宵夜"]}),
            ("{x}怎么保存才不容易坏", {"x": ["吃剩的饭菜", "包好的饺子", "自己做的辣椒酱"]}),
        ],
        "queries": [
            "附近有什么正宗的川菜",
            "番茄炒鸡蛋的做法",
            "晚上十二点还有哪家店营业",
        ],
    },
    {
        "slug": "travel",
        "name": "旅游出行",
        "hand": [
            "去云南旅游几月份最合适",
            "高铁票可以改签几次",
            "飞机上可以带充电宝吗",
            "护照过期了怎么续办",
            "第一次出国旅游需要准备什么",
            "酒店可以延迟退房吗",
            "火车票退票要收手续费吗",
            "自驾游出发前车要检查哪些地方",
            "景区门票有学生优惠吗",
            "航班延误了航空公司会赔偿吗",
            "带宠物坐飞机需要办什么手续",
            "出境旅游要换多少外币比较合适",
            "民宿和酒店哪个住着更方便",
            "旅游旺季怎么避开人多的景点",
            "在国外丢了护照应该怎么办",
            "坐长途大巴可以带多少行李",
            "去西藏会不会有高原反应",
            "跟团游和自由行哪个更省钱",
            "机场大巴早上几点开始发车",
            "签证被拒了还能再申请吗",
        ],
        "pairs": [
            ("飞机托运行李最多能带多重", "乘坐飞机托运行李的重量限制是多少"),
            ("高铁上可以吃泡面吗", "坐高铁能不能吃方便面"),
        ],
        "templates": [
            ("从北京到上海坐高铁要多久", {}),
            ("从广州到深圳坐高铁要多久", {}),
            ("从成都到重庆坐高铁要多久", {}),
            ("{place}有哪些值得去的景点", {"place": ["杭州", "西安", "厦门"]}),
        ],
        "queries": [
            "行李箱托运超重了怎么办",
            "坐火车可以带宠物吗",
            "去日本旅游要办签证吗",
        ],
    },
    {
        "slug": "health",
        "name": "健康与医疗",
        "hand": [
            "感冒发烧要不要马上去医院",
            "晚上总是失眠有什么办法改善",
            "体检前一天晚上可以吃东西吗",
            "孩子发烧到多少度需要吃退烧药",
            "经常头痛应该挂哪个科",
            "医保卡在外地看病能报销吗",
            "长期熬夜对身体有什么影响",
            "打完疫苗可以洗澡吗",
            "吃了头孢能喝酒吗",
            "颈椎不舒服平时要注意什么",
            "怎么在网上预约专家号",
            "血压偏高饮食上要注意什么",
            "牙疼得厉害能先吃止痛药吗",
            "久坐腰疼应该怎么缓解",
            "献血对身体有伤害吗",
            "过敏性鼻炎一到春天就犯怎么办",
            "拔智齿之后多久能正常吃饭",
            "视力下降了需要配眼镜吗",
            "被猫抓伤了要打狂犬疫苗吗",
            "体检报告上的上下箭头是什么意思",
        ],
        "pairs": [
            ("胃疼应该吃什么药", "胃不舒服吃哪种药比较好"),
            ("怎么预约医院的挂号", "去医院看病如何提前挂号"),
        ],
        "templates": [
            ("{x}持续好几天了，需要去医院检查吗", {"x": ["咳嗽", "低烧", "腹泻"]}),
            ("{x}一天吃多少比较合适", {"x": ["维生素C", "鸡蛋", "水果"]}),
        ],
        "queries": [
            "肚子疼吃什么药好",
            "网上怎么挂号",
            "一直咳嗽不好要做什么检查",
            "睡不着觉怎么办",
        ],
    },
    {
        "slug": "education",
        "name": "教育与学习",
        "hand": [
            "孩子上小学前需要学拼音吗",
            "考研复习一般要准备多久",
            "英语单词总是记不住怎么办",
            "在职可以读研究生吗",
            "高考志愿怎么填报比较稳妥",
            "网课和线下辅导班哪个效果好",
            "四六级考试可以带计算器吗",
            "怎么培养孩子的阅读习惯",
            "学编程应该从哪门语言开始",
            "自学考试的文凭国家承认吗",
            "出国留学需要准备哪些材料",
            "孩子写作业拖拉怎么办",
            "教师资格证考试难不难",
            "大学生可以申请助学贷款吗",
            "学历认证在哪里办理",
            "成年人学钢琴还来得及吗",
            "期末考试前怎么高效复习",
            "幼儿园报名需要哪些证件",
            "考试作弊被抓会有什么后果",
            "怎样提高英语口语水平",
        ],
        "pairs": [
            ("怎么提高孩子的数学成绩", "如何让孩子的数学成绩变好"),
            ("雅思考试怎么报名", "雅思在哪里报名参加考试"),
        ],
        "templates": [
            ("{exam}的成绩什么时候公布", {"exam": ["高考", "考研初试", "英语四级"]}),
            ("零基础学{x}难吗", {"x": ["日语", "画画", "吉他"]}),
        ],
        "queries": [
            "孩子数学不好怎么补",
            "考研要复习多长时间",
            "背单词有什么好方法",
        ],
    },
    {
        "slug": "housing",
        "name": "租房与房产",
        "hand": [
            "租房合同到期房东不退押金怎么办",
            "租房签合同前要检查哪些地方",
            "提前退租需要赔违约金吗",
            "房东可以随时进入租出去的房子吗",
            "买房首付最低要付多少",
            "公积金贷款和商业贷款哪个划算",
            "二手房交易要交哪些税",
            "租的房子热水器坏了谁负责修",
            "找中介租房中介费怎么收",
            "合租时怎么和室友分摊水电费",
            "房产证上可以写几个人的名字",
            "新房装修完多久可以入住",
            "租房可以办理居住证吗",
            "房贷可以提前还款吗",
            "看房的时候怎么判断采光好不好",
            "物业费包含哪些服务",
            "房东要涨房租我该怎么谈",
            "买期房有哪些风险",
            "租的房子能不能养宠物",
            "在城市落户需要什么条件",
        ],
        "pairs": [
            ("租房押金一般交几个月", "租房子通常要付几个月的押金"),
            ("房贷利率是多少", "现在买房贷款的利息是多少"),
        ],
        "templates": [
            ("租{x}一个月大概要多少钱", {"x": ["一室一厅", "两室一厅", "一个单间"]}),
            ("{x}需要准备哪些材料", {"x": ["办理房贷", "申请公租房", "房产过户"]}),
        ],
        "queries": [
            "房东不肯退押金",
            "租房押金要交多少",
            "买房贷款利率多少",
        ],
    },
    {
        "slug": "returns",
        "name": "网购退换货",
        "hand": [
            "七天无理由退货是从哪天开始算",
            "退货的运费由谁承担",
            "衣服尺码不合适可以换吗",
            "退款一般几天能到账",
            "商品已经拆封了还能退吗",
            "收到的东西和图片不一样怎么办",
            "卖家不同意退货可以找平台介入吗",
            "退款原路返回是退到哪里",
            "买了之后降价了可以申请补差价吗",
            "生鲜商品能退货吗",
            "退货时需要保留原包装吗",
            "换货的话需要重新付运费吗",
            "运费险怎么理赔",
            "申请退款后卖家一直不处理怎么办",
            "定制商品可以退换吗",
            "收到的商品少了配件怎么处理",
            "退货时寄错了地址怎么办",
            "发票丢了还能退货吗",
            "快递签收后才发现商品损坏能退吗",
            "取消订单后优惠券会退回吗",
        ],
        "pairs": [
            ("网购的东西怎么退货", "在网上买的商品如何办理退货"),
            ("收到的商品有质量问题怎么办", "买到的东西质量有问题该如何处理"),
        ],
        "templates": [
            ("{x}超过七天了还能退吗", {"x": ["买的鞋子", "买的电子产品", "买的化妆品"]}),
            ("用{pay}付的款，退款多久能到账", {"pay": ["信用卡", "花呗", "微信零钱"]}),
        ],
        "queries": [
            "买的东西想退货怎么操作",
            "退款什么时候到账",
            "衣服不合身能换吗",
            "商品坏了怎么退",
        ],
    },
    {
        "slug": "fitness",
        "name": "运动健身",
        "hand": [
            "刚开始健身每周练几次比较好",
            "跑步膝盖疼是姿势不对吗",
            "健身前一定要先热身吗",
            "增肌期间一天要吃多少蛋白质",
            "晨跑好还是夜跑好",
            "平板支撑每次做多久合适",
            "游泳能减肥吗",
            "健身房的私教课值得买吗",
            "运动后肌肉酸痛怎么缓解",
            "跳绳对膝盖有伤害吗",
            "在家没有器械怎么锻炼",
            "瑜伽适合男生练吗",
            "空腹运动会不会低血糖",
            "第一次跑马拉松要怎么准备",
            "只练腹肌能练出马甲线吗",
            "健身卡可以转让给别人吗",
            "骑行每天骑多少公里合适",
            "深蹲时膝盖能不能超过脚尖",
            "运动手环记录的卡路里准吗",
            "打羽毛球怎么防止手腕受伤",
        ],
        "pairs": [
            ("怎么减肚子上的赘肉", "如何有效减掉腹部脂肪"),
            ("跑步后应该怎么拉伸", "跑完步如何做拉伸放松"),
        ],
        "templates": [
            ("{x}的入门动作有哪些", {"x": ["普拉提", "哑铃训练", "拳击"]}),
            ("{t}运动有什么需要注意的", {"t": ["夏天高温时", "冬天早晨", "生理期"]}),
        ],
        "queries": [
            "怎么瘦肚子",
            "跑步前后要拉伸吗",
            "新手健身一周练几天",
        ],
    },
    {
        "slug": "jobs",
        "name": "工作与求职",
        "hand": [
            "简历写多长比较合适",
            "面试的时候被问到期望薪资怎么回答",
            "试用期可以随时辞职吗",
            "公司不交社保合法吗",
            "应届生找工作有哪些渠道",
            "离职需要提前多久通知公司",
            "加班没有加班费怎么办",
            "跳槽前要考虑哪些因素",
            "面试结束后多久会有结果",
            "被公司辞退能拿到赔偿吗",
            "离职了还能拿年终奖吗",
            "实习期间公司需要签合同吗",
            "怎么开具离职证明",
            "失业金怎么申请领取",
            "线上视频面试要注意什么",
            "工作三年想转行还来得及吗",
            "入职体检一般查哪些项目",
            "劳动合同到期不续签有补偿吗",
            "求职网站上的招聘信息可信吗",
            "面试时怎么做自我介绍",
        ],
        "pairs": [
            ("怎么写一份好的简历", "如何制作一份出色的求职简历"),
            ("年假有几天", "员工每年可以休几天年假"),
        ],
        "templates": [
            ("{job}岗位的面试一般问什么", {"job": ["程序员", "销售", "会计"]}),
            ("在深圳做程序员工资大概多少", {}),
            ("在杭州做设计师工资大概多少", {}),
            ("在成都做护士工资大概多少", {}),
        ],
        "queries": [
            "简历怎么写才好",
            "公司拖欠工资怎么办",
            "一年有几天带薪年假",
            "面试自我介绍怎么说",
        ],
    },
]


def expand(pattern: str, slots: dict) -> list[str]:
    if not slots:
        return [pattern]
    keys = sorted(slots)
    return [pattern.format(**dict(zip(keys, combo)))
            for combo in itertools.product(*(slots[k] for k in keys))]


def build() -> tuple[list[dict], list[str]]:
    records: list[dict] = []
    queries: list[str] = []
    for topic in TOPICS:
        slug, name = topic["slug"], topic["name"]
        # Items: (text, pair_key, member) where member 0/1 marks a paraphrase pair.
        items = [(t, None, None) for t in topic["hand"]]
        for i, (a, b) in enumerate(topic["pairs"]):
            items += [(a, i, 0), (b, i, 1)]
        for pattern, slots in topic["templates"]:
            items += [(t, None, None) for t in expand(pattern, slots)]
        # Interleave hand-written and templated sentences; fixed string seed
        # keeps this stable across runs and Python versions.
        random.Random("embedkit-demo-" + slug).shuffle(items)
        ids = {item: f"{slug}-{n:03d}" for n, item in enumerate(items, 1)}
        first_of = {}
        for item in items:  # the earlier member (by id) is the original
            if item[1] is not None and item[1] not in first_of:
                first_of[item[1]] = ids[item]
        for item in items:
            text, key, _ = item
            meta = {"topic": name}
            if key is not None and first_of[key] != ids[item]:
                meta["paraphrase_of"] = first_of[key]
            records.append({"id": ids[item], "text": text, "metadata": meta})
        queries += topic["queries"]
    records.sort(key=lambda r: r["id"])
    return records, queries


def validate(records: list[dict], queries: list[str]) -> None:
    errors = []
    ids = [r["id"] for r in records]
    texts = [r["text"] for r in records]
    if len(set(ids)) != len(ids):
        errors.append("duplicate ids")
    seen = set()
    for t in texts:
        if not t.strip() or t != t.strip() or "\n" in t:
            errors.append(f"empty/unclean text: {t!r}")
        if t in seen:
            errors.append(f"duplicate text: {t}")
        seen.add(t)
    idset = set(ids)
    for r in records:
        p = r["metadata"].get("paraphrase_of")
        if p is not None and (p not in idset or p == r["id"]):
            errors.append(f"{r['id']}: bad paraphrase_of {p!r}")
    for q in queries:
        if not q.strip():
            errors.append("empty query")
        if q in seen:
            errors.append(f"query is in the corpus: {q}")
    if len(set(queries)) != len(queries):
        errors.append("duplicate queries")
    if not 300 <= len(records) <= 400:
        errors.append(f"corpus size {len(records)} outside 300-400")
    if errors:
        sys.exit("demo corpus validation failed:\n  " + "\n  ".join(errors))


def main() -> None:
    records, queries = build()
    validate(records, queries)
    CORPUS_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(CORPUS_PATH, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(QUERIES_PATH, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(queries) + "\n")
    pairs = sum("paraphrase_of" in r["metadata"] for r in records)
    for topic in TOPICS:
        n = sum(r["metadata"]["topic"] == topic["name"] for r in records)
        print(f"{topic['slug']:<10} {topic['name']:<8} {n}", file=sys.stderr)
    print(f"total {len(records)} sentences, {pairs} paraphrase pairs, "
          f"{len(queries)} queries -> {CORPUS_PATH.relative_to(ROOT)}, "
          f"{QUERIES_PATH.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
