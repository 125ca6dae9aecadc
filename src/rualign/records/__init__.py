"""The files stages hand to each other, as typed records: one model, one reader and one writer per file.

  answers.jsonl    AnswerRecord   read_answers / write_answers (the resumable work file appends the same record)
  judgments.jsonl  Judgment       read_judgments / write_judgments
  score.json       Score          read_score / write_score
  run.json         RunInfo        read_run_info / write_run_info
  ref_loss.json    RefLoss        read_ref_loss / write_ref_loss
  knowledge.json   KnowledgeResult read_knowledge / write_knowledge
  judge_card.json  JudgeCard      read_judge_card / write_judge_card (Score.judge_card carries its JudgeStatus)
  manifest.json    Manifest       runs.read_manifest / runs.write_manifest (it guards every stage, so it lives there)

Every record carries `version` (default 1: files written before it existed still load) and keeps keys it does
not know (extra="allow"), so a file written by a newer rualign or enriched by a user survives a round trip.
docs/formats.md's record tables are generated from these models (`python -m rualign.records docs/formats.md`,
checked by a test).
Adding a field is one line in records/models.py; for Score, the field's `report=` says where the report shows it.
The package: models.py (the records), io.py (their readers and writers), docs.py (the formats.md tables); import
everything from `rualign.records`.
"""


from rualign.records.models import (DEFAULT_TARGET, ORDERS, VERSION, AnswerRecord, CardAccuracy, CardGold,
                                    CardJudge, CategoryScore, Count, Failures, GeneratorInfo, IdList, JudgeCard,
                                    JudgeInfo, JudgeStatus, Judgment, KnowledgeResult, KnowledgeScore, LengthBias,
                                    Lengths, LengthStats, Message, Part, Points, PromptValue, Rate, Record, RefLoss,
                                    RunInfo, Score, StageInfo, Usage, elsewhere, shown)
from rualign.records.io import (read_answers, read_judge_card, read_judgments, read_knowledge, read_ref_loss,
                                read_run_info, read_score, validated, write_answers, write_judge_card, write_judgments,
                                write_knowledge, write_ref_loss, write_run_info, write_score)
from rualign.records.docs import DOCS_BEGIN, DOCS_END, DOCUMENTED, docs_markdown, refresh_docs

__all__ = [
    "DEFAULT_TARGET", "ORDERS", "VERSION", "AnswerRecord", "CardAccuracy", "CardGold", "CardJudge", "CategoryScore",
    "Count", "Failures", "GeneratorInfo", "IdList", "JudgeCard", "JudgeInfo", "JudgeStatus", "Judgment",
    "KnowledgeResult", "KnowledgeScore", "LengthBias", "Lengths", "LengthStats", "Message", "Part", "Points",
    "PromptValue", "Rate", "Record", "RefLoss", "RunInfo", "Score", "StageInfo", "Usage", "elsewhere", "shown",
    "read_answers", "read_judge_card", "read_judgments", "read_knowledge", "read_ref_loss", "read_run_info",
    "read_score", "validated", "write_answers", "write_judge_card", "write_judgments", "write_knowledge",
    "write_ref_loss", "write_run_info", "write_score", "DOCS_BEGIN", "DOCS_END", "DOCUMENTED", "docs_markdown",
    "refresh_docs",
]
