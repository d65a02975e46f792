-- Temp table untagged_creators: who created each line's resource (AWS aws:createdBy), read only from the lines that
-- carry the tag (joining every untagged piece to its line's tag map was 8 of the warehouse step's 22 s at 5 M
-- rows); untagged_spend.sql joins it to the untagged pieces, once per dimension.
create or replace temp table untagged_creators as
select
    li.x_SourceName,
    li.x_BillingMonth,
    li.x_LineId,
    coalesce(li.Tags ->> '$."aws:createdBy"', li.Tags ->> '$."aws:created_by"') as created_by
from line_items as li
where contains(cast(li.Tags as varchar), 'aws:created')
